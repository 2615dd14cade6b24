// Package hoststoml renders and writes containerd hosts.toml files that make
// berth a registry's mirror: <dir>/<registry host>/hosts.toml, one per
// mirrored registry, with "_default" as the catch-all.
//
// A file berth writes carries the Marker line. Write never replaces or
// removes a file without it: an operator's own hosts.toml always wins and is
// reported as skipped, unless Options.Prepend asks for berth's [host] to go
// first into it (Prepend), between BlockBegin and BlockEnd lines, the rest
// of the file kept byte for byte. Parse reads a hosts.toml with go-toml,
// hosts in containerd's order.
package hoststoml

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/berth-registry/berth/pkg/config"
)

// Marker is the comment line that marks a hosts.toml as berth's to rewrite.
const Marker = "# managed by berth"

// Default is containerd's catch-all registry directory name.
const Default = "_default"

// DefaultDialTimeout is how long containerd waits to connect to the mirror
// before it falls back to the registry itself (containerd 1.7+ honours
// dial_timeout): short, so a dead berth costs a pull almost nothing.
const DefaultDialTimeout = 200 * time.Millisecond

// Host is one registry to mirror.
type Host struct {
	// Name is the registry as image references write it: docker.io,
	// registry.k8s.io, 10.0.0.5:5000, or Default.
	Name string
	// Server is the registry's real URL, containerd's fallback when the
	// mirror fails (https://registry-1.docker.io for docker.io). Empty
	// means containerd's own default for the requested host, which is the
	// only sensible value for Default.
	Server string
}

// Options says where the mirror is. The zero value of DialTimeout means
// DefaultDialTimeout.
type Options struct {
	Mirror      string        // berth's URL as containerd reaches it: http://127.0.0.1:5000
	DialTimeout time.Duration // connect timeout to the mirror
	SkipVerify  bool          // skip TLS verification of an https mirror
	// Authorization, when set, is the Authorization header containerd
	// sends berth with every request ("Basic <base64 user:password>" or
	// "Bearer <token>", for a berth with client auth). A file holding it
	// is written 0600, and no error or result ever repeats it.
	Authorization string
	// Prepend puts berth, as the first [host], into a hosts.toml that is
	// not berth's, between BlockBegin and BlockEnd, keeping the rest of
	// the file, instead of skipping that file.
	Prepend bool
}

// ErrInvalid is wrapped by errors about a host name, URL or option.
var ErrInvalid = errors.New("invalid hosts.toml input")

// ValidName reports whether name can be a registry directory: Default, or
// a registry name berth's config takes (config.CheckRegistryName, the one
// host validator: lowercase, distribution/reference's grammar). Such a name
// never contains a path separator or "..".
func ValidName(name string) bool {
	return name == Default || config.CheckRegistryName(name) == nil
}

// KnownServer returns the real URL of a registry name: docker.io's API lives
// at registry-1.docker.io, every other registry at https://<name>.
func KnownServer(name string) string {
	switch name {
	case Default:
		return ""
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}

// Render returns the hosts.toml for h. It fails, wrapping ErrInvalid, on a
// bad name, server or mirror URL.
func Render(h Host, opt Options) ([]byte, error) {
	if !ValidName(h.Name) {
		return nil, fmt.Errorf("registry %q: not a host[:port] or %s: %w", h.Name, Default, ErrInvalid)
	}
	if err := checkURL(opt.Mirror); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	if h.Server != "" {
		if err := checkURL(h.Server); err != nil {
			return nil, fmt.Errorf("registry %s server: %w", h.Name, err)
		}
	}
	table, err := hostTable(opt)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(Marker + "\n")
	b.WriteString("# Written by `berth hosts-toml`; berth rewrites this file on every run.\n")
	b.WriteString("# To keep your own edits, delete the first line (" + Marker + "): berth then leaves the file alone.\n")
	if h.Server != "" {
		fmt.Fprintf(&b, "server = %s\n", quote(h.Server))
	} else {
		b.WriteString("# no server: containerd falls back to the requested registry itself\n")
	}
	b.WriteString("\n" + table)
	return b.Bytes(), nil
}

// hostTable renders berth's [host] table (and its header table).
func hostTable(opt Options) (string, error) {
	if err := checkURL(opt.Mirror); err != nil {
		return "", fmt.Errorf("mirror: %w", err)
	}
	dial := opt.DialTimeout
	if dial == 0 {
		dial = DefaultDialTimeout
	}
	if dial < 0 {
		return "", fmt.Errorf("dial timeout %s: %w", dial, ErrInvalid)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[host.%s]\n", quote(opt.Mirror))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	fmt.Fprintf(&b, "  dial_timeout = %s\n", quote(dial.String()))
	if opt.SkipVerify {
		b.WriteString("  skip_verify = true\n")
	}
	if opt.Authorization != "" {
		if err := checkHeaderValue(opt.Authorization); err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "  [host.%s.header]\n", quote(opt.Mirror))
		fmt.Fprintf(&b, "    Authorization = %s\n", quote(opt.Authorization))
	}
	return b.String(), nil
}

// checkHeaderValue accepts a header value that needs no escaping in a
// TOML basic string and is a valid HTTP field value. The error never
// repeats the value: it is a secret.
func checkHeaderValue(v string) error {
	if strings.TrimSpace(v) != v {
		return fmt.Errorf("authorization: leading or trailing white space: %w", ErrInvalid)
	}
	for _, c := range v {
		if c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c > 0x7e {
			return fmt.Errorf("authorization: a control, non-ASCII, '\"' or '\\' character: %w", ErrInvalid)
		}
	}
	return nil
}

// checkURL accepts an absolute http or https URL with a host, and nothing
// that would need escaping in a TOML string.
func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q: %w", s, ErrInvalid)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q: want http(s)://host[:port][/path]: %w", s, ErrInvalid)
	}
	if strings.ContainsAny(s, "\"\\ \t\r\n") {
		return fmt.Errorf("%q: unexpected character: %w", s, ErrInvalid)
	}
	return nil
}

// quote writes a TOML basic string; checkURL keeps out what needs escaping.
func quote(s string) string { return `"` + s + `"` }

// IsManaged reports whether content is a hosts.toml berth wrote: one of its
// lines is exactly Marker.
func IsManaged(content []byte) bool {
	for _, line := range strings.Split(string(content), "\n") {
		if strings.TrimRight(line, " \t\r") == Marker {
			return true
		}
	}
	return false
}
