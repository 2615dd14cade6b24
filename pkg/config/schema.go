package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// schemaCheck walks a YAML tree beside the Go type it decodes into. It
// names unknown fields by their path (the decoder names only a Go type) and
// decodes each value alone, so that an error is known by its node: its line
// and field path, with no need to read them back out of the YAML library's
// message text.
type schemaCheck struct {
	errs []lineError
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

func reflectType(v any) reflect.Type { return reflect.TypeOf(v).Elem() }

// resolve follows document and alias nodes to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return n
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return n
}

func (s *schemaCheck) check(n *yaml.Node, t reflect.Type, path string) {
	n = resolve(n)
	if n == nil {
		return
	}
	switch {
	case reflect.PointerTo(t).Implements(unmarshalerType):
		s.decode(n, t, path)
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		s.checkStruct(n, t, path)
	case t.Kind() == reflect.Slice && n.Kind == yaml.SequenceNode:
		for i, e := range n.Content {
			s.check(e, t.Elem(), path+"["+strconv.Itoa(i)+"]")
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			s.decode(k, t.Key(), join(path, k.Value))
			s.check(v, t.Elem(), join(path, k.Value))
		}
	default:
		s.decode(n, t, path)
	}
}

// decode decodes the value n alone into a new t and records the problem,
// if any, at n's line.
func (s *schemaCheck) decode(n *yaml.Node, t reflect.Type, path string) {
	err := n.Decode(reflect.New(t).Interface())
	if err == nil {
		return
	}
	msg := err.Error()
	var ve *valueError
	var te *yaml.TypeError
	switch {
	case errors.As(err, &ve):
		msg = ve.msg
	case errors.As(err, &te):
		msg = mismatch(n, t)
	}
	s.errs = append(s.errs, lineError{line: n.Line, path: path, msg: msg})
}

// mismatch says that n cannot be a t.
func mismatch(n *yaml.Node, t reflect.Type) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf("cannot unmarshal %s `%s` into %s", n.ShortTag(), n.Value, t)
	}
	return fmt.Sprintf("cannot unmarshal %s into %s", n.ShortTag(), t)
}

// valueError is a value a type's UnmarshalYAML refuses, at its node.
type valueError struct {
	line int
	msg  string
}

func (e *valueError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func (s *schemaCheck) checkStruct(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			s.checkMerge(v, t, path)
			continue
		}
		p := join(path, k.Value)
		f, ok := fields[k.Value]
		if !ok {
			s.errs = append(s.errs, lineError{line: k.Line, path: p, msg: unknownMsg(k.Value, fields)})
			continue
		}
		s.check(v, f.Type, p)
	}
}

func (s *schemaCheck) checkMerge(v *yaml.Node, t reflect.Type, path string) {
	v = resolve(v)
	if v.Kind == yaml.SequenceNode {
		for _, e := range v.Content {
			s.check(e, t, path)
		}
		return
	}
	s.check(v, t, path)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps the YAML names of t's exported fields to the fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	m := map[string]reflect.StructField{}
	for _, f := range reflect.VisibleFields(t) {
		if name := yamlName(f); name != "" {
			m[name] = f
		}
	}
	return m
}

// yamlName is f's key in YAML, or "" for a field YAML skips.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

func unknownMsg(key string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3
	for name := range fields {
		d := editDistance(strings.ToLower(key), strings.ToLower(name))
		if d < bestD || (d == bestD && name < best) {
			best, bestD = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field (did you mean %q?)", best)
	}
	return "unknown field"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
