package hoststoml

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// BlockBegin and BlockEnd enclose the [host] table berth prepends to a
// hosts.toml that is not its own (Options.Prepend). berth rewrites or
// removes only the lines from BlockBegin to BlockEnd.
const (
	BlockBegin = "# berth: begin"
	BlockEnd   = "# berth: end"
)

const blockBeginLine = BlockBegin + " (berth hosts-toml --prepend rewrites these lines up to \"" + BlockEnd + "\" and leaves the rest of the file as it is; berth hosts-toml --remove takes them out)"

// File is what a hosts.toml says, as containerd reads it.
type File struct {
	Server string
	// Hosts are the [host."URL"] tables in file order, the order
	// containerd tries them in.
	Hosts []string
	// Berth reports whether the file holds a block berth prepended.
	Berth bool
	doc   map[string]any
}

// Parse reads a hosts.toml with go-toml: its values and the order of its
// [host] tables (from the parser's document order, since a decoded map
// has none). A host defined other than by a [host."URL"] table header
// (dotted keys, an inline table) is refused: its place in the order
// cannot be told.
func Parse(content []byte) (*File, error) {
	f := &File{doc: map[string]any{}}
	if err := toml.Unmarshal(content, &f.doc); err != nil {
		return nil, fmt.Errorf("hosts.toml does not parse: %v: %w", err, ErrInvalid)
	}
	f.Server, _ = f.doc["server"].(string)
	order, _, err := hostOrder(content)
	if err != nil {
		return nil, err
	}
	f.Hosts = order
	hosts, _ := f.doc["host"].(map[string]any)
	if len(hosts) != len(order) {
		return nil, fmt.Errorf("hosts.toml: a host is defined by dotted keys or an inline table, so its place in containerd's order is unknown: %w", ErrInvalid)
	}
	_, _, found, err := findBlock(content)
	if err != nil {
		return nil, err
	}
	f.Berth = found
	return f, nil
}

// hostOrder lists the [host."URL"] tables in document order and the byte
// offset of the line holding the first table header of any kind (len
// when there is none): berth's table goes there, after the top-level keys.
func hostOrder(content []byte) ([]string, int, error) {
	var p unstable.Parser
	p.Reset(content)
	var hosts []string
	first := len(content)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.Table && e.Kind != unstable.ArrayTable {
			continue
		}
		var keys []string
		var at = -1
		for it := e.Key(); it.Next(); {
			n := it.Node()
			if at < 0 {
				at = int(n.Raw.Offset)
			}
			keys = append(keys, string(n.Data))
		}
		if at >= 0 && first == len(content) {
			first = bytes.LastIndexByte(content[:at], '\n') + 1
		}
		if e.Kind == unstable.Table && len(keys) == 2 && keys[0] == "host" {
			hosts = append(hosts, keys[1])
		}
	}
	if err := p.Error(); err != nil {
		return nil, 0, fmt.Errorf("hosts.toml does not parse: %v: %w", err, ErrInvalid)
	}
	return hosts, first, nil
}

// findBlock locates berth's block: the byte range from the start of the
// BlockBegin line to the end of the BlockEnd line.
func findBlock(content []byte) (start, end int, found bool, err error) {
	off := 0
	start = -1
	for _, line := range strings.SplitAfter(string(content), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(t, BlockBegin):
			if start >= 0 {
				return 0, 0, false, fmt.Errorf("hosts.toml: two %q lines: %w", BlockBegin, ErrInvalid)
			}
			start = off
		case t == BlockEnd:
			if start < 0 {
				return 0, 0, false, fmt.Errorf("hosts.toml: %q without %q: %w", BlockEnd, BlockBegin, ErrInvalid)
			}
			end = off + len(line)
			// the blank line berth writes after its block goes with it
			if rest := content[end:]; len(rest) > 0 && rest[0] == '\n' {
				end++
			}
			return start, end, true, nil
		}
		off += len(line)
	}
	if start >= 0 {
		return 0, 0, false, fmt.Errorf("hosts.toml: %q without %q: fix the file by hand: %w", BlockBegin, BlockEnd, ErrInvalid)
	}
	return 0, 0, false, nil
}

// Unprepend returns content without berth's block, and whether there was one.
func Unprepend(content []byte) ([]byte, bool, error) {
	start, end, found, err := findBlock(content)
	if err != nil || !found {
		return content, false, err
	}
	out := append(append([]byte{}, content[:start]...), content[end:]...)
	return out, true, nil
}

// Prepend returns content, a hosts.toml that is not berth's, with berth's
// [host] table first (containerd tries hosts in file order, then server):
// between BlockBegin and BlockEnd, before the file's first table, replacing
// the block berth wrote before. The operator's server, settings and hosts
// stay byte for byte. It refuses, wrapping ErrInvalid, a file that does
// not parse, one that already names the mirror as a host of its own below
// another (berth would add a duplicate table), or one where the result would
// not read back as the same file with berth first.
func Prepend(content []byte, opt Options) ([]byte, error) {
	table, err := hostTable(opt)
	if err != nil {
		return nil, err
	}
	if _, err := Parse(content); err != nil {
		return nil, err
	}
	rest, _, err := Unprepend(content)
	if err != nil {
		return nil, err
	}
	before, err := Parse(rest)
	if err != nil {
		return nil, err
	}
	for i, h := range before.Hosts {
		if h != opt.Mirror {
			continue
		}
		if i == 0 {
			return rest, nil // the operator put berth first already
		}
		return nil, fmt.Errorf("hosts.toml already lists %s as host %d of %d: move it first by hand or delete it: %w", h, i+1, len(before.Hosts), ErrInvalid)
	}
	_, at, err := hostOrder(rest)
	if err != nil {
		return nil, err
	}
	// The block and one blank line after it: Unprepend takes both out.
	block := blockBeginLine + "\n" + table + BlockEnd + "\n\n"
	var b bytes.Buffer
	b.Write(rest[:at])
	if at > 0 && rest[at-1] != '\n' {
		b.WriteByte('\n')
	}
	b.WriteString(block)
	b.Write(rest[at:])
	out := b.Bytes()

	after, err := Parse(out)
	if err != nil {
		return nil, fmt.Errorf("cannot prepend berth: the result would not parse (%v): %w", err, ErrInvalid)
	}
	if len(after.Hosts) == 0 || after.Hosts[0] != opt.Mirror {
		return nil, fmt.Errorf("cannot prepend berth: it would not be the first host (%q): %w", after.Hosts, ErrInvalid)
	}
	hosts, _ := after.doc["host"].(map[string]any)
	delete(hosts, opt.Mirror)
	if len(hosts) == 0 {
		delete(after.doc, "host")
	}
	if !reflect.DeepEqual(after.doc, before.doc) {
		return nil, fmt.Errorf("cannot prepend berth: the file's other settings would read back differently: %w", ErrInvalid)
	}
	return out, nil
}
