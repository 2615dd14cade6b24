package hoststoml

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const dir = "/etc/containerd/certs.d"

func TestCheckContainerd(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, config string
		problem      string // "" means none
		warning      string
	}{
		{"2.x single dir", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n", "", ""},
		{"2.x several dirs, transfer service", "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n", "12415", ""},
		{"2.4 several dirs, transfer service", "version = 4\n[plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = false\n  [plugins.'io.containerd.cri.v1.images'.registry]\n    config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'\n", "transfer service", ""},
		{"2.x several dirs, local pull", "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  use_local_image_pull = true\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'\n", "", "2.1+"},
		{"1.x several dirs", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d:/etc/docker/certs.d\"\n", "", "before upgrading"},
		{"no config_path", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"\"\n", "not set", ""},
		{"empty file", "", "not set", ""},
		{"other dir", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/docker/certs.d'\n", "does not name", ""},
	} {
		got, err := checkContainerd("config.toml", []byte(c.config), dir)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		switch {
		case c.problem == "" && len(got.Problems) > 0:
			t.Errorf("%s: problems %q, want none", c.name, got.Problems)
		case c.problem != "" && (len(got.Problems) != 1 || !strings.Contains(got.Problems[0], c.problem) || !strings.Contains(got.Problems[0], `config_path = "`+dir+`"`)):
			t.Errorf("%s: problems %q, want one about %q naming the fix", c.name, got.Problems, c.problem)
		}
		if c.warning != "" && (len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], c.warning)) {
			t.Errorf("%s: warnings %q, want one about %q", c.name, got.Warnings, c.warning)
		}
	}
	if _, err := checkContainerd("config.toml", []byte("version = [\n"), dir); err == nil {
		t.Error("a config that does not parse checked fine")
	}
}

func TestFixContainerd(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, config, keep string }{
		{"replace the line", "# my comment\nversion = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'\n[plugins.'io.containerd.cri.v1.images'.image_decryption]\n  key_model = 'node'\n", "# my comment"},
		{"add the line", "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  # mirrors go here\n\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/opt/cni/bin\"\n", "# mirrors go here"},
		{"add the table", "version = 3\n[grpc]\n  address = '/run/containerd/containerd.sock' # keep\n", "# keep"},
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		if err := os.WriteFile(path, []byte(c.config), 0o640); err != nil {
			t.Fatal(err)
		}
		changed, err := FixContainerd(path, dir)
		if err != nil || !changed {
			t.Fatalf("%s: changed %v, %v", c.name, changed, err)
		}
		after, err := CheckContainerd(path, dir)
		if err != nil || len(after.Problems) > 0 || after.ConfigPath != dir {
			t.Errorf("%s: after the fix: %+v %v", c.name, after, err)
		}
		b, _ := os.ReadFile(path)
		if !strings.Contains(string(b), c.keep) || !strings.Contains(string(b), FixMarker) {
			t.Errorf("%s: fixed file lost %q or lacks the marker:\n%s", c.name, c.keep, b)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, want 0640 kept", c.name, fi.Mode().Perm())
		}
		if old, err := os.ReadFile(path + ".berth-backup"); err != nil || string(old) != c.config {
			t.Errorf("%s: backup %q %v", c.name, old, err)
		}
		if changed, err := FixContainerd(path, dir); err != nil || changed {
			t.Errorf("%s: a second fix changed %v, %v; want nothing to do", c.name, changed, err)
		}
	}
	// An inline table cannot be edited line by line: refused, file unchanged.
	path := filepath.Join(t.TempDir(), "config.toml")
	inline := "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  registry = { config_path = \"/a:/b\" }\n"
	if err := os.WriteFile(path, []byte(inline), 0o644); err != nil {
		t.Fatal(err)
	}
	if changed, err := FixContainerd(path, dir); err == nil || changed {
		t.Errorf("inline table: changed %v, err %v; want a refusal", changed, err)
	}
	if b, _ := os.ReadFile(path); string(b) != inline {
		t.Errorf("refused fix changed the file:\n%s", b)
	}
}

// The comment in berth's file says how to stop berth managing it; doing
// what it says must work.
func TestRenderCommentSaysHowToKeepTheFile(t *testing.T) {
	t.Parallel()
	b, err := Render(Host{Name: "docker.io", Server: "https://registry-1.docker.io"}, Options{Mirror: "http://127.0.0.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if !strings.Contains(l, "To keep your own edits, delete") {
			continue
		}
		var drop int
		switch {
		case strings.Contains(l, "the first line"):
			drop = 0
		case strings.Contains(l, "the line above this one"):
			drop = i - 1
		default:
			t.Fatalf("instruction names no line: %q", l)
		}
		edited := strings.Join(append(lines[:drop:drop], lines[drop+1:]...), "\n")
		if IsManaged([]byte(edited)) {
			t.Errorf("following %q leaves the file berth's:\n%s", l, edited)
		}
		return
	}
	t.Fatalf("no instruction in:\n%s", b)
}
