package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runBerth runs the CLI in process: its stdout and error.
func runBerth(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := run(t, args...)
	return out, err
}

// --check fails on a file that bypasses berth and names the problem;
// --file merges berth in, keeping the operator's entries and a backup;
// then --check passes and a second merge changes nothing.
func TestClientConfigFileCheckMerge(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "registries.conf")
	own := "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nlocation = \"quay.io\"\nblocked = true\n"
	if err := os.WriteFile(file, []byte(own), 0o640); err != nil {
		t.Fatal(err)
	}
	args := []string{"client-config", "registries-conf", "--mirror", "http://127.0.0.1:5000",
		"--registry", "docker.io", "--registry", "127.0.0.1:5001=http://127.0.0.1:5001", "--file", file}
	out, err := runBerth(t, append(args, "--check")...)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:5001: no [[registry]]") {
		t.Fatalf("check before: %v\n%s", err, out)
	}
	if out, err := runBerth(t, args...); err != nil || !strings.Contains(out, "written") {
		t.Fatalf("merge: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(file)
	for _, want := range []string{"127.0.0.1:5000/127.0.0.1_5001", "127.0.0.1:5000/docker.io", "quay.io", "unqualified-search-registries"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("merged file lacks %q:\n%s", want, b)
		}
	}
	if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
	if old, _ := os.ReadFile(file + ".berth-backup"); string(old) != own {
		t.Errorf("backup %q", old)
	}
	if out, err := runBerth(t, append(args, "--check")...); err != nil || !strings.HasPrefix(out, "ok") {
		t.Errorf("check after: %v\n%s", err, out)
	}
	if out, err := runBerth(t, args...); err != nil || !strings.HasPrefix(out, "unchanged") {
		t.Errorf("second merge: %v\n%s", err, out)
	}
	if _, err := runBerth(t, "client-config", "registries-conf", "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io", "--check"); err == nil {
		t.Error("--check without --file accepted")
	}
}

// k3s and docker through the CLI: a fresh --file is written with its
// header, checks pass, and docker refuses any registry but Docker Hub.
func TestClientConfigK3sDocker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		kind, file string
		regs       []string
		want       string
	}{
		{"k3s", "registries.yaml", []string{"--registry", "docker.io", "--registry", "_default"}, `'*':`},
		{"docker", "daemon.json", nil, `"registry-mirrors"`},
	} {
		file := filepath.Join(dir, c.file)
		args := append([]string{"client-config", c.kind, "--mirror", "http://127.0.0.1:5000", "--file", file}, c.regs...)
		if out, err := runBerth(t, args...); err != nil || !strings.Contains(out, "written") {
			t.Fatalf("%s: %v\n%s", c.kind, err, out)
		}
		if b, _ := os.ReadFile(file); !strings.Contains(string(b), c.want) || !strings.Contains(string(b), "http://127.0.0.1:5000") {
			t.Errorf("%s wrote:\n%s", c.kind, b)
		}
		if out, err := runBerth(t, append(args, "--check")...); err != nil {
			t.Errorf("%s check: %v\n%s", c.kind, err, out)
		}
		if out, err := runBerth(t, append(args, "--check", "--mirror", "http://127.0.0.1:6000")...); err == nil {
			t.Errorf("%s check against another berth passed:\n%s", c.kind, out)
		}
	}
	_, err := runBerth(t, "client-config", "docker", "--mirror", "http://127.0.0.1:5000", "--registry", "quay.io")
	if err == nil || !strings.Contains(err.Error(), "only mirrors Docker Hub") {
		t.Errorf("docker --registry quay.io: %v", err)
	}
}
