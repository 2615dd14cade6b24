package hoststoml

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"
)

// An operator's hosts.toml, with what could fool a line scanner: a
// bracket in a comment and in a multi-line string before the first table.
const operatorFile = `# our corporate mirror first, then Docker Hub
server = "https://registry-1.docker.io"
capabilities = ["pull", "resolve"]
# [host."http://not-a-table"]
note = """
[host."http://not-a-table-either"]
"""

[host."https://mirror.corp.internal"]
  capabilities = ["pull", "resolve"]
  ca = "/etc/containerd/certs.d/docker.io/corp.pem"

[host."https://mirror2.corp.internal"]
  capabilities = ["pull"]
  [host."https://mirror2.corp.internal".header]
    X-Team = ["infra"]
`

func TestPrependKeepsTheOperatorsFile(t *testing.T) {
	t.Parallel()
	opt := Options{Mirror: "http://127.0.0.1:5000"}
	out, err := Prepend([]byte(operatorFile), opt)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(out)
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	want := []string{"http://127.0.0.1:5000", "https://mirror.corp.internal", "https://mirror2.corp.internal"}
	if diff := cmp.Diff(want, f.Hosts); diff != "" || f.Server != "https://registry-1.docker.io" || !f.Berth {
		t.Fatalf("hosts (-want +got):\n%s\nserver %q berth %v\n%s", diff, f.Server, f.Berth, out)
	}
	// What containerd reads for berth's host.
	var doc struct {
		Host map[string]struct {
			Capabilities []string `toml:"capabilities"`
			DialTimeout  string   `toml:"dial_timeout"`
			CA           string   `toml:"ca"`
		} `toml:"host"`
	}
	if err := toml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	if h := doc.Host["http://127.0.0.1:5000"]; !cmp.Equal(h.Capabilities, []string{"pull", "resolve"}) || h.DialTimeout != "200ms" {
		t.Errorf("berth's host: %+v", h)
	}
	if doc.Host["https://mirror.corp.internal"].CA == "" {
		t.Errorf("the operator's ca is gone:\n%s", out)
	}
	// The operator's bytes are all there, and only berth's block was added.
	rest, found, err := Unprepend(out)
	if err != nil || !found || string(rest) != operatorFile {
		t.Errorf("unprepend: found %v, %v:\n%s", found, err, rest)
	}
	// Again: nothing changes. A moved berth replaces its block.
	if again, err := Prepend(out, opt); err != nil || string(again) != string(out) {
		t.Errorf("second prepend changed the file (%v):\n%s", err, again)
	}
	moved, err := Prepend(out, Options{Mirror: "http://10.0.0.7:5000"})
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := Parse(moved); f == nil || f.Hosts[0] != "http://10.0.0.7:5000" || len(f.Hosts) != 3 || strings.Contains(string(moved), "127.0.0.1:5000") {
		t.Errorf("moved berth:\n%s", moved)
	}
}

func TestPrependShapes(t *testing.T) {
	t.Parallel()
	opt := Options{Mirror: "http://127.0.0.1:5000"}
	for name, c := range map[string]struct {
		in    string
		hosts []string
		err   bool
	}{
		"empty":                  {"", []string{opt.Mirror}, false},
		"server only":            {`server = "https://quay.io"`, []string{opt.Mirror}, false},
		"header table first":     {"server = \"https://quay.io\"\n[header]\n  X-A = \"b\"\n[host.\"https://m\"]\n", []string{opt.Mirror, "https://m"}, false},
		"berth first already":    {"[host.\"http://127.0.0.1:5000\"]\n[host.\"https://m\"]\n", []string{opt.Mirror, "https://m"}, false},
		"berth second":           {"[host.\"https://m\"]\n[host.\"http://127.0.0.1:5000\"]\n", nil, true},
		"dotted host":            {"host.\"https://m\".capabilities = [\"pull\"]\n", nil, true},
		"inline host":            {"host = { \"https://m\" = { capabilities = [\"pull\"] } }\n", nil, true},
		"does not parse":         {"[host.\"https://m\"\n", nil, true},
		"begin without end":      {BlockBegin + "\n[host.\"https://m\"]\n", nil, true},
		"end without begin":      {BlockEnd + "\n", nil, true},
		"berth's block, nothing": {blockBeginLine + "\n" + BlockEnd + "\n\n", []string{opt.Mirror}, false},
	} {
		out, err := Prepend([]byte(c.in), opt)
		if c.err {
			if err == nil || !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %v, want an ErrInvalid refusal:\n%s", name, err, out)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		f, err := Parse(out)
		if err != nil || !cmp.Equal(f.Hosts, c.hosts) {
			t.Errorf("%s: hosts %v, %v, want %v:\n%s", name, f, err, c.hosts, out)
		}
	}
}

func TestAuthorizationHeader(t *testing.T) {
	t.Parallel()
	const secret = "Bearer s3cr3t-t0ken.with_chars~+/="
	opt := Options{Mirror: "http://127.0.0.1:5000", Authorization: secret}
	for name, render := range map[string]func() ([]byte, error){
		"render": func() ([]byte, error) {
			return Render(Host{Name: "docker.io", Server: "https://registry-1.docker.io"}, opt)
		},
		"prepend": func() ([]byte, error) { return Prepend([]byte(operatorFile), opt) },
	} {
		b, err := render()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var doc struct {
			Host map[string]struct {
				Header map[string]any `toml:"header"`
			} `toml:"host"`
		}
		if err := toml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
		if got := doc.Host[opt.Mirror].Header["Authorization"]; got != secret {
			t.Errorf("%s: Authorization %q:\n%s", name, got, b)
		}
		if f, err := Parse(b); err != nil || f.Hosts[0] != opt.Mirror {
			t.Errorf("%s: berth not first: %v %v", name, f, err)
		}
	}
	for _, bad := range []string{"Bearer a\"b", "Bearer a\nX-Evil: 1", "Bearer a\\b", " Bearer a", "Bearer é"} {
		_, err := Render(Host{Name: "docker.io"}, Options{Mirror: opt.Mirror, Authorization: bad})
		if err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("Authorization %q accepted: %v", bad, err)
			continue
		}
		if strings.Contains(err.Error(), strings.TrimSpace(bad)) {
			t.Errorf("the error repeats the secret: %v", err)
		}
	}
}

// Write with Prepend: a foreign file gets berth's block and keeps its
// mode; a run again changes nothing; a certificate directory without a
// hosts.toml is still skipped; Remove restores the operator's bytes and
// deletes berth's own files. With Authorization, files are 0600.
func TestWritePrependAndRemove(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "docker.io", FileName), operatorFile)
	if err := os.Chmod(filepath.Join(dir, "docker.io", FileName), 0o640); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "quay.io", "ca.crt"), "cert")
	hosts := []Host{{Name: "docker.io", Server: "https://registry-1.docker.io"}, {Name: "quay.io", Server: "https://quay.io"}, {Name: "ghcr.io", Server: "https://ghcr.io"}}
	popt := Options{Mirror: "http://127.0.0.1:5000", Prepend: true}

	rs, err := Write(dir, hosts, popt, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"docker.io": Prepended, "quay.io": Skipped, "ghcr.io": Written}, actions(rs)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	path := filepath.Join(dir, "docker.io", FileName)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("prepended file mode %v, want 0640 kept", fi.Mode().Perm())
	}
	if f, err := Parse([]byte(readFile(t, path))); err != nil || f.Hosts[0] != popt.Mirror || len(f.Hosts) != 3 {
		t.Errorf("prepended file: %+v %v", f, err)
	}
	rs, err = Write(dir, hosts, popt, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"docker.io": Unchanged, "quay.io": Skipped, "ghcr.io": Unchanged}, actions(rs)); diff != "" {
		t.Fatalf("second run (-want +got):\n%s", diff)
	}

	// With a secret: both files 0600, and the results never carry it.
	aopt := popt
	aopt.Authorization = "Basic YWxpY2U6d29uZGVybGFuZA=="
	rs, err = Write(dir, hosts, aopt, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if strings.Contains(r.Reason, "YWxp") {
			t.Errorf("result carries the secret: %+v", r)
		}
		if r.Action == Skipped {
			continue
		}
		if fi, _ := os.Stat(r.Path); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s with a secret: mode %v, want 0600", r.Path, fi.Mode().Perm())
		}
	}

	// Prune of docker.io takes only berth's block out of it.
	rs, err = Write(dir, hosts[1:], aopt, true)
	if err != nil {
		t.Fatal(err)
	}
	if actions(rs)["docker.io"] != Removed || readFile(t, path) != operatorFile {
		t.Errorf("prune: %v\n%s", rs, readFile(t, path))
	}
	rs, err = Remove(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"ghcr.io": Removed}, actions(rs)); diff != "" {
		t.Errorf("remove (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, "ghcr.io")); !os.IsNotExist(err) {
		t.Errorf("berth's directory left: %v", err)
	}
	if readFile(t, path) != operatorFile || readFile(t, filepath.Join(dir, "quay.io", "ca.crt")) != "cert" {
		t.Error("remove touched the operator's files")
	}
	noTemps(t, dir)
}

// FuzzPrepend: whatever the operator's file, Prepend either refuses it
// (ErrInvalid) or returns a file containerd reads with berth first, from
// which Unprepend gives back the operator's bytes (plus at most a final
// newline), and which a second Prepend leaves as it is.
func FuzzPrepend(f *testing.F) {
	for _, s := range []string{"", operatorFile, "server = \"https://quay.io\"", "[header]\n  X = \"y\"\n",
		"[host.\"http://127.0.0.1:5000\"]\n", "a = \"\"\"\n[host.\"x\"]\n\"\"\"\n[host.\"https://m\"]\n", BlockBegin + "\n" + BlockEnd + "\n"} {
		f.Add(s)
	}
	opt := Options{Mirror: "http://127.0.0.1:5000", Authorization: "Bearer t"}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Prepend([]byte(in), opt)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		file, err := Parse(out)
		if err != nil || len(file.Hosts) == 0 || file.Hosts[0] != opt.Mirror {
			t.Fatalf("result: %+v %v\n%s", file, err, out)
		}
		again, err := Prepend(out, opt)
		if err != nil || string(again) != string(out) {
			t.Fatalf("second prepend: %v\n%q\n%q", err, out, again)
		}
		rest, found, err := Unprepend(out)
		if err != nil {
			t.Fatal(err)
		}
		orig, _, _ := Unprepend([]byte(in))
		if found && string(rest) != string(orig) && string(rest) != string(orig)+"\n" {
			t.Fatalf("unprepend: %q, want %q", rest, orig)
		}
	})
}
