package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
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
// process runs; the caller waits for readiness (ready, waitSocket).
func startProc(t testing.TB, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = proctest.ChildEnv(env...)
	return &proc{proctest.Run(t, cmd, name, 10*time.Second, nil)}
}

// ready polls url until it answers with want (nil), the process exits or
// 60s pass (an error with the log's tail).
func (p *proc) ready(url string, want int) error { return p.WaitHTTP(url, want, 60*time.Second) }

// waitSocket polls until a unix socket accepts connections.
func (p *proc) waitSocket(t testing.TB, path string) {
	t.Helper()
	if err := p.WaitSocket(path, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

// freeAddr returns a loopback host:port that was free a moment ago.
var freeAddr = proctest.FreeAddr

// deadAddr returns a loopback host:port nothing listens on: a fallback
// that fails loudly.
var deadAddr = proctest.FreeAddr

// run runs a command with a bound and returns its combined output.
func run(t testing.TB, timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = proctest.ChildEnv(env...)
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
