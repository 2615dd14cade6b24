package config

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// EnvPrefix begins the name of every environment variable berth reads.
const EnvPrefix = "BERTH_"

// EnvVar is one environment variable that overrides a scalar setting.
type EnvVar struct {
	Name string // BERTH_CACHE_MAX_SIZE
	Path string // cache.maxSize
	Type string // string, int, float, bool, duration or list (comma-separated)
}

// EnvVars lists the variables ApplyEnv reads, in the order of the fields in
// Config. The name of each is EnvPrefix and the field's YAML path in upper
// snake case, one "_" between path segments and between words of a
// camelCase key: cache.maxSize is BERTH_CACHE_MAX_SIZE, tagTTL is
// BERTH_TAG_TTL. Lists of structs (registries) have no variable.
func EnvVars() []EnvVar {
	var vars []EnvVar
	walkEnv(reflect.TypeFor[Config](), nil, "", func(v EnvVar, _ []int) { vars = append(vars, v) })
	return vars
}

func walkEnv(t reflect.Type, index []int, path string, fn func(EnvVar, []int)) {
	for _, f := range reflect.VisibleFields(t) {
		name := yamlName(f)
		if name == "" || len(f.Index) > 1 {
			continue
		}
		idx := append(append([]int(nil), index...), f.Index...)
		p := join(path, name)
		if kind := envKind(f.Type); kind != "" {
			fn(EnvVar{Name: EnvPrefix + envName(p), Path: p, Type: kind}, idx)
		} else if f.Type.Kind() == reflect.Struct {
			walkEnv(f.Type, idx, p, fn)
		}
	}
}

func envKind(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[Duration]():
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Int:
		return "int"
	case t.Kind() == reflect.Float64:
		return "float"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "list"
	}
	return ""
}

// envName turns a YAML path into upper snake case: peers.secretFile is
// PEERS_SECRET_FILE, tagTTL is TAG_TTL, tlsHandshake is TLS_HANDSHAKE.
func envName(path string) string {
	var b strings.Builder
	for i, seg := range strings.Split(path, ".") {
		if i > 0 {
			b.WriteByte('_')
		}
		r := []rune(seg)
		for j, c := range r {
			if j > 0 && unicode.IsUpper(c) && (!unicode.IsUpper(r[j-1]) || j+1 < len(r) && unicode.IsLower(r[j+1])) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToUpper(c))
		}
	}
	return b.String()
}

// ApplyEnv overrides cfg's scalar settings (see EnvVars) with the BERTH_*
// variables in environ ("NAME=value" pairs, as os.Environ returns). A
// variable that is set overrides even when empty: BERTH_CACHE_MAX_SIZE=""
// turns the quota off, an empty list variable empties the list; an empty
// number, duration or bool is an error. Lists are comma-separated. Errors,
// every one joined, name the variable; variables ApplyEnv does not know are
// left alone (see UnknownEnv). It does not validate.
func ApplyEnv(cfg *Config, environ []string) error {
	env := envMap(environ)
	var errs []error
	root := reflect.ValueOf(cfg).Elem()
	walkEnv(root.Type(), nil, "", func(v EnvVar, idx []int) {
		s, ok := env[v.Name]
		if !ok {
			return
		}
		if err := setEnv(root.FieldByIndex(idx), v.Type, s); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", v.Name, err))
		}
	})
	return errors.Join(errs...)
}

func setEnv(f reflect.Value, kind, s string) error {
	switch kind {
	case "string":
		f.SetString(s)
	case "list":
		var l []string
		for _, e := range strings.Split(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				l = append(l, e)
			}
		}
		f.Set(reflect.ValueOf(l))
	case "duration":
		d, err := ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
	case "int":
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		f.SetInt(int64(n))
	case "float":
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("invalid number %q", s)
		}
		f.SetFloat(x)
	case "bool":
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		f.SetBool(b)
	}
	return nil
}

// envMap keeps the BERTH_* entries of environ; a later entry wins.
func envMap(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			m[k] = v
		}
	}
	return m
}

// UnknownEnv returns the BERTH_* variables in environ that neither ApplyEnv
// nor ApplyCredentialEnv reads, sorted, so the caller can warn of typos.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, v := range EnvVars() {
		known[v.Name] = true
	}
	var out []string
	for k := range envMap(environ) {
		if !known[k] && !isCredentialEnv(k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
