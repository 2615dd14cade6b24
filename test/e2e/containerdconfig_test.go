package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// `berth hosts-toml --containerd-config` on the real default config of
// containerd 1.6 (config_path unset) and 2.x (config_path listing two
// directories, which 2.1+'s transfer service ignores): it refuses with the
// fix, writing nothing; --fix-containerd-config edits the file, and that
// containerd's own `config dump` then reads config_path as berth's dir.
func TestHostsTomlChecksAndFixesContainerdConfig(t *testing.T) {
	t.Parallel()
	berth := needBerth(t)
	for _, c := range []struct {
		name, bin, from, to string
	}{
		{"containerd 1.6", tool(t, "containerd"), `config_path = ""`, `config_path = ""`},
		{"containerd 2.x", containerd2Tool(t, "containerd"), `config_path = ''`, `config_path = '/etc/containerd/certs.d:/etc/docker/certs.d'`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			hosts := filepath.Join(dir, "certs.d")
			def := mustRun(t, time.Minute, nil, c.bin, "config", "default")
			// The CRI registry table's config_path comes first in both defaults.
			cfg := strings.Replace(def, c.from, c.to, 1)
			if !strings.Contains(def, c.from) {
				t.Fatalf("%s's default config has no %s:\n%s", c.name, c.from, def)
			}
			path := filepath.Join(dir, "config.toml")
			if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"hosts-toml", "--dir", hosts, "--mirror", "http://127.0.0.1:5000", "--registry", "docker.io", "--containerd-config", path}
			out, err := run(t, time.Minute, nil, berth, args...)
			if err == nil || !strings.Contains(out, `set config_path = "`+hosts+`"`) {
				t.Fatalf("hosts-toml on a config that bypasses berth: %v\n%s", err, out)
			}
			if _, err := os.Stat(filepath.Join(hosts, "docker.io")); !os.IsNotExist(err) {
				t.Errorf("a refused run wrote hosts.toml files: %v", err)
			}
			out = mustRun(t, time.Minute, nil, berth, append(args, "--fix-containerd-config")...)
			if !strings.Contains(out, "RESTART CONTAINERD") {
				t.Errorf("the fix does not say to restart containerd:\n%s", out)
			}
			dump := mustRun(t, time.Minute, nil, c.bin, "--config", path, "config", "dump")
			re := regexp.MustCompile(`(?m)^\s*config_path = ['"]` + regexp.QuoteMeta(hosts) + `['"]`)
			if !re.MatchString(dump) {
				t.Errorf("%s reads the fixed config without config_path = %s:\n%s", c.name, hosts, dump)
			}
			if b, err := os.ReadFile(path + ".berth-backup"); err != nil || string(b) != cfg {
				t.Errorf("backup: %v", err)
			}
			// Now fine: a run without --fix passes and writes the files.
			mustRun(t, time.Minute, nil, berth, args...)
			if _, err := os.Stat(filepath.Join(hosts, "docker.io", "hosts.toml")); err != nil {
				t.Error(err)
			}
		})
	}
}
