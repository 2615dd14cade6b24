package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"
	"golang.org/x/crypto/bcrypt"
)

// upstream is a distribution registry on a loopback port that counts the
// requests it answers.
type upstream struct {
	srv      *http.Server
	host     string
	requests atomic.Int64
	errors5  atomic.Int64 // 5xx it answered: not berth's doing
}

func startUpstream(dir string) (*upstream, error) {
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": dir},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.Log.Level = "error"
	app := handlers.NewApp(context.Background(), cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{host: ln.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.requests.Add(1)
		sw := &status{ResponseWriter: w}
		app.ServeHTTP(sw, r)
		if sw.code >= 500 {
			u.errors5.Add(1)
		}
	}), ReadHeaderTimeout: 30 * time.Second}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) close() { u.srv.Close() }

type status struct {
	http.ResponseWriter
	code int
}

func (s *status) WriteHeader(c int) {
	if s.code == 0 {
		s.code = c
	}
	s.ResponseWriter.WriteHeader(c)
}

func (s *status) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// berthProc is the berth process under load.
type berthProc struct {
	cmd              *exec.Cmd
	url, admin       string
	private          string // name of the registry that needs credentials
	user, password   string
	done             chan struct{}
	logPath, workDir string
}

// startBerth runs berth in front of up twice over: under up's own name for
// anyone, and as "private.load.test" for authenticated clients only.
func startBerth(ctx context.Context, bin, dir string, up *upstream) (*berthProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	admin, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &berthProc{url: "http://" + addr, admin: "http://" + admin, private: "private.load.test",
		user: "loader", password: "load-test-password", done: make(chan struct{}), workDir: dir}
	hash, err := bcrypt.GenerateFromPassword([]byte(b.password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(b.user+":"+string(hash)+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := map[string]any{
		"listen":          map[string]any{"addr": addr},
		"admin":           map[string]any{"addr": admin},
		"cache":           map[string]any{"dir": filepath.Join(dir, "cache")},
		"auth":            map[string]any{"htpasswd": htpasswd},
		"defaultRegistry": up.host,
		"registries": []any{
			map[string]any{"name": up.host, "endpoints": []string{"http://" + up.host}},
			map[string]any{"name": b.private, "endpoints": []string{"http://" + up.host}, "access": "authenticated"},
		},
		"log": map[string]any{"level": "warn"},
	}
	y, _ := yaml.Marshal(cfg)
	path := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(path, y, 0o600); err != nil {
		return nil, err
	}
	b.logPath = filepath.Join(dir, "berth.log")
	logf, err := os.Create(b.logPath)
	if err != nil {
		return nil, err
	}
	b.cmd = exec.Command(bin, "serve", "--config", path)
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			b.cmd.Env = append(b.cmd.Env, kv)
		}
	}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { b.cmd.Wait(); logf.Close(); close(b.done) }()
	if err := waitOK(ctx, b.url+"/readyz"); err != nil {
		b.stop()
		return nil, fmt.Errorf("%w; log:\n%s", err, b.tail())
	}
	return b, nil
}

// stop ends berth: SIGTERM, then SIGKILL after 20s.
func (b *berthProc) stop() {
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
	}
}

func (b *berthProc) tail() string {
	data, _ := os.ReadFile(b.logPath)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// sample returns berth's resident memory and open fds now.
func (b *berthProc) sample() (rss int64, fds int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", b.cmd.Process.Pid))
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
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.cmd.Process.Pid))
	return rss, len(ents)
}
