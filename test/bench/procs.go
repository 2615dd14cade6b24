//go:build bench

package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-registry/berth/test/proctest"
)

// proc is a child process; its output goes to a log file in its dir.
type proc struct {
	*proctest.Proc
	admin string // berth's admin listener (/metrics), host:port
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]bool{}
)

// startProc starts bin in its own process group; it dies with us (Pdeathsig).
func startProc(name, dir string, env []string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pp, err := proctest.Start(cmd, dir, name, nil)
	if err != nil {
		return nil, err
	}
	p := &proc{Proc: pp}
	procsMu.Lock()
	procs[p] = true
	procsMu.Unlock()
	return p, nil
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	procsMu.Lock()
	delete(procs, p)
	procsMu.Unlock()
	p.Stop(grace)
}

// stopAll stops every process still running (the exit path).
func stopAll() {
	procsMu.Lock()
	var all []*proc
	for p := range procs {
		all = append(all, p)
	}
	procsMu.Unlock()
	for _, p := range all {
		p.stop(5 * time.Second)
	}
}

// pid is the process id.
func (p *proc) pid() int { return p.Cmd.Process.Pid }

// status reads the process's VmHWM (peak RSS, bytes) and user+system CPU seconds.
func (p *proc) status() (hwm int64, cpu float64) { return pidStatus(p.pid()) }

// pidStatus reads VmHWM and user+system CPU seconds of pid from /proc.
func pidStatus(pid int) (hwm int64, cpu float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				hwm = kb << 10
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// fields after the ")" of comm: state is field 3; utime 14, stime 15.
		fs := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		u, _ := strconv.ParseFloat(fs[11], 64)
		st, _ := strconv.ParseFloat(fs[12], 64)
		cpu = (u + st) / 100 // USER_HZ
	}
	return hwm, cpu
}

// freeAddr returns a free 127.0.0.1 port as host:port.
func freeAddr() string {
	addr, err := proctest.PickAddr()
	if err != nil {
		panic(err)
	}
	return addr
}

// registryConfig is distribution's config: filesystem storage under dir,
// and a proxy section when remote is not empty.
func registryConfig(dir, addr, remote string) string {
	c := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: bench-not-a-secret
`, filepath.Join(dir, "data"), addr)
	if remote != "" {
		c += "proxy:\n  remoteurl: " + remote + "\n"
	}
	return c
}

// startRegistry runs distribution's registry (a proxy of remote when set).
func startRegistry(ctx context.Context, bin, dir, name, remote string) (*proc, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr := freeAddr()
	file := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(file, []byte(registryConfig(dir, addr, remote)), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc(name, dir, []string{"OTEL_TRACES_EXPORTER=none"}, bin, "serve", file)
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitHTTP("http://"+addr+"/v2/", 200, 30*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// startGoFloor runs the Go floor server (test/bench/gofloor) serving file.
func startGoFloor(ctx context.Context, bin, dir, file string) (*proc, string, error) {
	if bin == "" {
		return nil, "", fmt.Errorf("no Go floor server (-gofloor)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr := freeAddr()
	p, err := startProc("gofloor", dir, nil, bin, "-addr", addr, "-file", file)
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitHTTP("http://"+addr+"/", 200, 30*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// peerOpts makes a berth node a cluster member.
type peerOpts struct {
	Name, Bind, Join, SecretFile string
	StripeSize                   string // peers.stripeSize; "" keeps the default
	IdleTimeout                  string // peers.idleTimeout; "" keeps the default
}

// startBerth runs berth serve with only the upstream registry configured
// (the default, so /v2/<name>/... needs no ns), cache under dir.
func startBerth(ctx context.Context, bin, dir, name, upstream string, peer *peerOpts) (*proc, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr := freeAddr()
	// tagTTL 10m: the manifest rounds outlast the default 60 s, and a tag
	// revalidated mid-run would be one upstream HEAD the row counts
	// (distribution's proxy keeps tags for its own, longer TTL).
	cfg := fmt.Sprintf("defaultRegistry: %q\ntagTTL: 10m\nregistries:\n  - name: %q\n    endpoints: [\"http://%s\"]\n%s",
		upstream, upstream, upstream, berthLog)
	admin := freeAddr()
	args := []string{"serve", "--addr", addr, "--admin-addr", admin, "--cache-dir", filepath.Join(dir, "cache")}
	if peer != nil {
		cfg += fmt.Sprintf("peers:\n  nodeName: %q\n", peer.Name)
		if peer.StripeSize != "" {
			cfg += fmt.Sprintf("  stripeSize: %q\n", peer.StripeSize)
		}
		if peer.IdleTimeout != "" {
			cfg += fmt.Sprintf("  idleTimeout: %q\n", peer.IdleTimeout)
		}
		args = append(args, "--peer-bind", peer.Bind, "--peer-advertise", addr,
			"--peer-join", peer.Join, "--peer-secret-file", peer.SecretFile)
	}
	file := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return nil, "", err
	}
	args = append(args, "--config", file)
	p, err := startProc(name, dir, nil, bin, args...)
	if err != nil {
		return nil, "", err
	}
	p.admin = admin
	if err := p.WaitHTTP("http://"+addr+"/v2/", 200, 30*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// startNginx serves root at http://addr/ with sendfile: one process, no
// master, so that it dies with the bench (Pdeathsig) whatever happens.
func startNginx(ctx context.Context, bin, dir, root string) (*proc, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	addr := freeAddr()
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes 1;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type application/octet-stream;
  server { listen %[2]s; root %[3]s; }
}
`, dir, addr, root)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProc("nginx", dir, nil, bin, "-c", file, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, "", err
	}
	if err := p.WaitHTTP("http://"+addr+"/nonexistent", 404, 30*time.Second); err != nil {
		p.stop(5 * time.Second)
		return nil, "", err
	}
	return p, addr, nil
}

// childPIDs are pid's children (nginx's worker under its master).
func childPIDs(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}
