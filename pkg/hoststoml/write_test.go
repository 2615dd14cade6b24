package hoststoml

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var opt = Options{Mirror: "http://127.0.0.1:5000"}

func actions(rs []Result) map[string]Action {
	m := map[string]Action{}
	for _, r := range rs {
		m[r.Name] = r.Action
	}
	return m
}

func TestWriteCreatesThenKeepsThenReplaces(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hosts := []Host{{Name: "docker.io", Server: "https://registry-1.docker.io"}, {Name: Default}}

	rs, err := Write(dir, hosts, opt, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"docker.io": Written, Default: Written}, actions(rs)); diff != "" {
		t.Fatalf("first write (-want +got):\n%s", diff)
	}
	for _, h := range hosts {
		want, _ := Render(h, opt)
		path := filepath.Join(dir, h.Name, FileName)
		if got := readFile(t, path); got != string(want) {
			t.Errorf("%s = %q, want %q", path, got, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v, want 0644", path, fi.Mode().Perm())
		}
	}

	rs, err = Write(dir, hosts, opt, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"docker.io": Unchanged, Default: Unchanged}, actions(rs)); diff != "" {
		t.Fatalf("second write (-want +got):\n%s", diff)
	}

	moved := Options{Mirror: "http://10.1.2.3:5000"}
	rs, err = Write(dir, hosts, moved, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"docker.io": Written, Default: Written}, actions(rs)); diff != "" {
		t.Fatalf("third write (-want +got):\n%s", diff)
	}
	if got := readFile(t, filepath.Join(dir, "docker.io", FileName)); !strings.Contains(got, `[host."http://10.1.2.3:5000"]`) {
		t.Errorf("berth's own file was not replaced:\n%s", got)
	}
	noTemps(t, dir)
}

func TestWriteNeverOverwritesForeignFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	foreign := "server = \"https://mirror.example.internal\"\n"
	writeFile(t, filepath.Join(dir, "docker.io", FileName), foreign)
	// A Docker-style certificate directory: a new hosts.toml would hide it.
	writeFile(t, filepath.Join(dir, "quay.io", "ca.crt"), "cert")
	// An operator took over berth's file by deleting the marker line.
	taken := "server = \"https://ghcr.io\"\n# edited by hand\n"
	writeFile(t, filepath.Join(dir, "ghcr.io", FileName), taken)
	// A symlink is never followed or replaced.
	writeFile(t, filepath.Join(dir, "target.toml"), Marker+"\n")
	if err := os.MkdirAll(filepath.Join(dir, "registry.k8s.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "target.toml"), filepath.Join(dir, "registry.k8s.io", FileName)); err != nil {
		t.Fatal(err)
	}

	hosts := []Host{
		{Name: "docker.io", Server: "https://registry-1.docker.io"},
		{Name: "quay.io", Server: "https://quay.io"},
		{Name: "ghcr.io", Server: "https://ghcr.io"},
		{Name: "registry.k8s.io", Server: "https://registry.k8s.io"},
		{Name: "10.0.0.5:5000", Server: "http://10.0.0.5:5000"},
	}
	rs, err := Write(dir, hosts, opt, true)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Action{"docker.io": Skipped, "quay.io": Skipped, "ghcr.io": Skipped, "registry.k8s.io": Skipped, "10.0.0.5:5000": Written}
	if diff := cmp.Diff(want, actions(rs)); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	for _, r := range rs {
		if r.Action == Skipped && r.Reason == "" {
			t.Errorf("%s skipped without a reason", r.Name)
		}
	}
	if got := readFile(t, filepath.Join(dir, "docker.io", FileName)); got != foreign {
		t.Errorf("foreign docker.io file changed to %q", got)
	}
	if got := readFile(t, filepath.Join(dir, "ghcr.io", FileName)); got != taken {
		t.Errorf("taken-over ghcr.io file changed to %q", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "quay.io", FileName)); !os.IsNotExist(err) {
		t.Errorf("hosts.toml written beside a certificate: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "registry.k8s.io", FileName)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("symlink replaced: %v %v", fi, err)
	}
	noTemps(t, dir)
}

func TestWritePrunesOnlyBerthFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := Write(dir, []Host{{Name: "quay.io", Server: "https://quay.io"}, {Name: "ghcr.io", Server: "https://ghcr.io"}}, opt, false); err != nil {
		t.Fatal(err)
	}
	foreign := "server = \"https://example.internal\"\n"
	writeFile(t, filepath.Join(dir, "example.internal", FileName), foreign)

	rs, err := Write(dir, []Host{{Name: "ghcr.io", Server: "https://ghcr.io"}}, opt, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]Action{"ghcr.io": Unchanged, "quay.io": Removed}, actions(rs)); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, "quay.io")); !os.IsNotExist(err) {
		t.Errorf("pruned registry directory still there: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "example.internal", FileName)); got != foreign {
		t.Errorf("prune touched a foreign file: %q", got)
	}
}

func TestWriteReportsBadInputAndGoesOn(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hosts := []Host{{Name: "../escape"}, {Name: "quay.io", Server: "https://quay.io"}, {Name: "quay.io"}}
	rs, err := Write(dir, hosts, opt, false)
	if err == nil {
		t.Fatal("no error for a bad name and a duplicate")
	}
	for _, want := range []string{"../escape", "listed twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if diff := cmp.Diff(map[string]Action{"quay.io": Written}, actions(rs)); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !os.IsNotExist(err) {
		t.Errorf("wrote outside dir: %v", err)
	}
}
