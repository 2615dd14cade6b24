package hoststoml

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-registry/berth/pkg/config"
)

func TestRender(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		host Host
		opt  Options
		want string
	}{
		{
			name: "docker hub",
			host: Host{Name: "docker.io", Server: "https://registry-1.docker.io"},
			opt:  Options{Mirror: "http://127.0.0.1:5000"},
			want: `# managed by berth
# Written by ` + "`berth hosts-toml`" + `; berth rewrites this file on every run.
# To keep your own edits, delete the first line (# managed by berth): berth then leaves the file alone.
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  dial_timeout = "200ms"
`,
		},
		{
			name: "default catch-all has no server, custom timeout, https mirror",
			host: Host{Name: Default},
			opt:  Options{Mirror: "https://10.0.0.7:5443", DialTimeout: 500 * time.Millisecond, SkipVerify: true},
			want: `# managed by berth
# Written by ` + "`berth hosts-toml`" + `; berth rewrites this file on every run.
# To keep your own edits, delete the first line (# managed by berth): berth then leaves the file alone.
# no server: containerd falls back to the requested registry itself

[host."https://10.0.0.7:5443"]
  capabilities = ["pull", "resolve"]
  dial_timeout = "500ms"
  skip_verify = true
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Render(tt.host, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("Render (-want +got):\n%s", diff)
			}
			if !IsManaged(got) {
				t.Error("rendered file lacks the marker")
			}
		})
	}
}

func TestRenderRejects(t *testing.T) {
	t.Parallel()
	good := Options{Mirror: "http://127.0.0.1:5000"}
	tests := []struct {
		name string
		host Host
		opt  Options
	}{
		{"path in name", Host{Name: "../etc"}, good},
		{"slash in name", Host{Name: "a/b"}, good},
		{"dot dot", Host{Name: "a..b"}, good},
		{"empty name", Host{Name: ""}, good},
		{"server not a URL", Host{Name: "quay.io", Server: "quay.io"}, good},
		{"server with quote", Host{Name: "quay.io", Server: `https://quay.io/"x`}, good},
		{"mirror ftp", Host{Name: "quay.io"}, Options{Mirror: "ftp://127.0.0.1"}},
		{"mirror missing", Host{Name: "quay.io"}, Options{}},
		{"negative timeout", Host{Name: "quay.io"}, Options{Mirror: "http://127.0.0.1:5000", DialTimeout: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Render(tt.host, tt.opt); !errors.Is(err, ErrInvalid) {
				t.Errorf("Render(%+v, %+v) = %v, want ErrInvalid", tt.host, tt.opt, err)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"docker.io": true, "registry.k8s.io": true, "10.0.0.5:5000": true, "[::1]:5000": true,
		"_default": true, "localhost": true, "..": false, ".": false, "a/b": false, "-x": false,
		"x:": false, "": false, `a\b`: false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestKnownServer(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"docker.io": "https://registry-1.docker.io", "quay.io": "https://quay.io", Default: "",
	} {
		if got := KnownServer(name); got != want {
			t.Errorf("KnownServer(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestIsManaged(t *testing.T) {
	t.Parallel()
	for content, want := range map[string]bool{
		"# managed by berth\nserver = \"x\"\n":   true,
		"server = \"x\"\n# managed by berth\r\n": true,
		"server = \"x\"\n":                       false,
		"# managed by berth? no\n":               false,
		"  # managed by berth\n":                 false,
	} {
		if got := IsManaged([]byte(content)); got != want {
			t.Errorf("IsManaged(%q) = %v, want %v", content, got, want)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noTemps fails if a temp file was left behind anywhere under dir.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tmpPrefix) {
			t.Errorf("temp file left behind: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestValidNameIsTheConfigsRegistryName: a hosts.toml directory is made
// only for a name berth's config takes, upper case included.
func TestValidNameIsTheConfigsRegistryName(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"docker.io", "Docker.IO", "REGISTRY.k8s.io", "[::1]:5000", "[::1]", "x:", "a..b", "a_b"} {
		if got, want := ValidName(name), config.CheckRegistryName(name) == nil; got != want {
			t.Errorf("ValidName(%q) = %v, but the config's check says %v", name, got, want)
		}
	}
}
