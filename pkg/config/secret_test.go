package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSecret(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		name, content string
		ok            bool
	}{
		{"empty", "", false},
		{"only a newline", "\n", false},
		{"short", "s3cret\n", false},
		{"15 bytes and white space", "  0123456789abcde \n", false},
		{"16 bytes", "0123456789abcdef", true},
		{"generated", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0Cg==\n", true},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
		if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := ReadSecret(p)
		if c.ok != (err == nil) {
			t.Errorf("%s: %v", c.name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "peers.secretFile") {
			t.Errorf("%s: the error does not name the field: %v", c.name, err)
		}
		if err == nil && string(b) != strings.TrimSpace(c.content) {
			t.Errorf("%s: got %q", c.name, b)
		}
		cfg := &Config{Peers: Peers{Bind: "127.0.0.1:7946", SecretFile: p}}
		if err := cfg.CheckFiles(); c.ok != (err == nil) {
			t.Errorf("%s: CheckFiles: %v", c.name, err)
		}
	}
	if _, err := ReadSecret(filepath.Join(dir, "absent")); err == nil {
		t.Error("a missing secret file was read")
	}
}
