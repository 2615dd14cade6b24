package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
)

// proc is a process a test started. Its stdout and stderr go to a log
// file, shown when the test fails. It is stopped in t.Cleanup.
type proc struct{ *proctest.Proc }

// startProc starts name with args and extra env. It returns once the
// process runs; the caller waits for readiness (waitHTTP).
func startProc(t testing.TB, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(childEnv(), env...)
	pp, err := proctest.Start(cmd, t.TempDir(), name, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{pp}
	t.Cleanup(func() {
		p.Stop(10 * time.Second)
		if t.Failed() || testing.Verbose() {
			t.Logf("%s log (%s):\n%s", name, strings.Join(cmd.Args, " "), p.Tail(8000))
		}
	})
	return p
}

// childEnv is the test's environment less BERTH_* variables, which berth
// would read as settings.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			env = append(env, kv)
		}
	}
	return env
}

// waitHTTP polls url until it answers with want, the process exits, or
// the deadline passes, and fails t unless it answered.
func (p *proc) waitHTTP(t testing.TB, url string, want int) {
	t.Helper()
	if err := p.ready(url, want); err != nil {
		t.Fatal(err)
	}
}

// ready polls url until it answers with want (nil), the process exits or
// 60s pass (an error with the log's tail).
func (p *proc) ready(url string, want int) error {
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, p.Err(), p.Tail(4000))
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond) // polling a process that gives no signal
	}
	return fmt.Errorf("%s not ready at %s after 60s: %s\n%s", p.Name, url, last, p.Tail(4000))
}

// waitSocket polls until a unix socket accepts connections.
func (p *proc) waitSocket(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if p.Exited() {
			t.Fatalf("%s exited before it was ready (%v):\n%s", p.Name, p.Err(), p.Tail(4000))
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: socket %s not ready after 60s\n%s", p.Name, path, p.Tail(4000))
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// deadAddr returns a loopback host:port nothing listens on: a fallback
// that fails loudly.
func deadAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(freePort(t))
}

// run runs a command with a bound and returns its combined output.
func run(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(childEnv(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, fmt.Errorf("%s: timed out after %s", filepath.Base(bin), timeout))
	}
	return out.String(), err
}

// mustRun is run that fails t on error.
func mustRun(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) string {
	t.Helper()
	out, err := run(t, timeout, env, bin, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return out
}
