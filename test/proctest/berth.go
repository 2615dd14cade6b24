package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Berth is a `berth serve` process on loopback ports.
type Berth struct {
	*Proc
	Addr     string // 127.0.0.1:port
	URL      string // http://Addr
	AdminURL string // the admin listener: /metrics, /debug/*
	CacheDir string
}

// StartBerth writes cfg, a config file as a YAML tree, to dir/berth.yaml
// and runs `bin serve --config` on it with args, its log in dir.
// listen.addr, admin.addr and cache.dir (dir/cache) are filled in where cfg
// leaves them out; other listen, admin and cache settings stay. It returns
// once /readyz answers 200 (within a minute), and stops the process when
// it does not.
func StartBerth(bin, dir string, cfg map[string]any, args ...string) (*Berth, error) {
	b := &Berth{}
	var err error
	if b.Addr, err = fill(cfg, "listen", "addr", PickAddr); err != nil {
		return nil, err
	}
	admin, err := fill(cfg, "admin", "addr", PickAddr)
	if err != nil {
		return nil, err
	}
	b.CacheDir, _ = fill(cfg, "cache", "dir", func() (string, error) { return filepath.Join(dir, "cache"), nil })
	b.URL, b.AdminURL = "http://"+b.Addr, "http://"+admin
	y, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"serve", "--config", path}, args...)...)
	cmd.Env = ChildEnv()
	if b.Proc, err = Start(cmd, dir, "berth", nil); err != nil {
		return nil, err
	}
	if err := b.WaitHTTP(b.URL+"/readyz", 200, time.Minute); err != nil {
		b.Stop(5 * time.Second)
		return nil, err
	}
	return b, nil
}

// RunBerth is StartBerth for t in a temp dir: the process is stopped when
// t ends (SIGTERM, SIGKILL after 15s) and its log shown when t failed.
func RunBerth(t testing.TB, bin string, cfg map[string]any, args ...string) *Berth {
	t.Helper()
	b, err := StartBerth(bin, t.TempDir(), cfg, args...)
	if err != nil {
		t.Fatalf("berth: %v", err)
	}
	t.Cleanup(func() {
		b.Stop(15 * time.Second)
		if t.Failed() {
			t.Logf("berth log, first warnings:\n%s", b.Warnings(20))
			t.Logf("berth log:\n%s", b.Tail(12000))
		}
	})
	return b
}

// fill returns cfg[section][key], setting it to def() when absent.
func fill(cfg map[string]any, section, key string, def func() (string, error)) (string, error) {
	m, _ := cfg[section].(map[string]any)
	if m == nil {
		m = map[string]any{}
		cfg[section] = m
	}
	if v, ok := m[key].(string); ok && v != "" {
		return v, nil
	}
	v, err := def()
	if err != nil {
		return "", fmt.Errorf("%s.%s: %w", section, key, err)
	}
	m[key] = v
	return v, nil
}
