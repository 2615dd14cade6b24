package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-registry/berth/pkg/config"
)

// run executes the berth command line in process.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := rootCmd()
	c.SetArgs(args)
	c.SetOut(&out)
	c.SetErr(&errOut)
	err = c.Execute()
	return out.String(), errOut.String(), err
}

func TestConfigDefaultPrintsAValidFile(t *testing.T) {
	out, _, err := run(t, "config", "default")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal([]byte(out), config.DefaultYAML()) {
		t.Fatal("config default does not print the embedded default")
	}
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = run(t, "config", "validate", path)
	if err != nil || out != path+": ok\n" {
		t.Fatalf("validate the default: %q %v", out, err)
	}
}

func TestConfigValidateReportsEveryErrorWithItsPath(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown field", "cache:\n  dir: /tmp/x\n  bogus: 1\n", []string{"bogus"}},
		{"bad values", "listen:\n  addr: nonsense\n  tls:\n    certFile: /c.pem\nlog:\n  level: loud\n  format: xml\nmetrics:\n  topRepos: -1\n",
			[]string{"listen.addr", "listen.tls.addr", "log.level", "log.format", "metrics.topRepos"}},
		{"bad duration", "tagTTL: soon\n", []string{"tagTTL"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(c.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			out, errOut, err := run(t, "config", "validate", path)
			if err == nil || out != "" || !strings.Contains(err.Error(), "not valid") {
				t.Fatalf("validate: out %q, err %v", out, err)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("report lacks %q:\n%s", w, errOut)
				}
			}
		})
	}
	if _, _, err := run(t, "config", "validate", filepath.Join(dir, "absent.yaml")); err == nil {
		t.Fatal("validate of a missing file succeeded")
	}
}
