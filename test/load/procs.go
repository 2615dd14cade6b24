package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"golang.org/x/crypto/bcrypt"
)

// berthProc is the berth process under load.
type berthProc struct {
	*proctest.Berth
	private        string // name of the registry that needs credentials
	user, password string
}

// startBerth runs berth in front of up twice over: under up's own name for
// anyone, and as "private.load.test" for authenticated clients only.
func startBerth(bin, dir string, up *upstreamtest.Registry) (*berthProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &berthProc{private: "private.load.test", user: "loader", password: "load-test-password"}
	hash, err := bcrypt.GenerateFromPassword([]byte(b.password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(b.user+":"+string(hash)+"\n"), 0o600); err != nil {
		return nil, err
	}
	b.Berth, err = proctest.StartBerth(bin, dir, map[string]any{
		"auth":            map[string]any{"htpasswd": htpasswd},
		"defaultRegistry": up.Host,
		"registries": []any{
			map[string]any{"name": up.Host, "endpoints": []string{up.URL}},
			map[string]any{"name": b.private, "endpoints": []string{up.URL}, "access": "authenticated"},
		},
		"log": map[string]any{"level": "warn"},
	})
	return b, err
}

// stop ends berth: SIGTERM, then SIGKILL after 20s.
func (b *berthProc) stop() { b.Stop(20 * time.Second) }

// sample returns berth's resident memory and open fds now.
func (b *berthProc) sample() (rss int64, fds int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.Cmd.Process.Pid))
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				rss = kb << 10
			}
		}
		f.Close()
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.Cmd.Process.Pid))
	return rss, len(ents)
}
