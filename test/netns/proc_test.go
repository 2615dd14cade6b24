package netns

import (
	"bufio"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
)

// proc is a long-running process inside a namespace (`ip netns exec`
// execs it, so its pid is the program's). Its stdout lines arrive on
// lines; its stderr goes to a log file, shown when the test fails. The
// testNet stops it in cleanup.
type proc struct {
	*proctest.Proc
	stdin io.WriteCloser // nil unless asked for
	lines chan string    // stdout, line by line; closed at EOF
}

// start runs bin in h's namespace. withStdin gives the process a pipe to
// write to (proc.stdin).
func (n *testNet) start(t *testing.T, h host, name string, env []string, withStdin bool, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	cmd.Env = childEnv(env...)
	// Pdeathsig: a test binary killed by go test's -timeout runs no
	// cleanup; its children must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{lines: make(chan string, 64)}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if withStdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	p.Proc, err = proctest.Start(cmd, n.dir, name, func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	})
	if err != nil {
		t.Fatal(err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p
}

// helperProc starts this test binary in role inside h.
func (n *testNet) helperProc(t *testing.T, h host, name, role string, withStdin bool, args ...string) *proc {
	t.Helper()
	return n.start(t, h, name, helperEnv(role), withStdin, self(t), args...)
}

// expect returns the next stdout line, which must start with prefix, or
// fails t when the process ends or timeout passes first.
func (p *proc) expect(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	l, err := p.next(prefix, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (p *proc) next(prefix string, timeout time.Duration) (string, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.Done()
			return "", fmt.Errorf("%s ended (%v) before printing %q:\n%s", p.Name, p.Err(), prefix, p.Tail(4000))
		}
		if !strings.HasPrefix(l, prefix) {
			return "", fmt.Errorf("%s printed %q, want %q", p.Name, l, prefix)
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s printed no %q within %s:\n%s", p.Name, prefix, timeout, p.Tail(4000))
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.Done():
		if err := p.Err(); err != nil {
			return fmt.Errorf("%s: %w:\n%s", p.Name, err, p.Tail(4000))
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s:\n%s", p.Name, timeout, p.Tail(4000))
	}
}

// stop closes the process's stdin, then stops it (proctest.Proc.Stop).
func (p *proc) stop(grace time.Duration) {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
	p.Stop(grace)
}

// report fails t on a data race in the log and shows the log when t failed.
func (p *proc) report(t *testing.T) {
	log := p.Tail(1 << 20)
	if strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", p.Name, log)
	} else if t.Failed() || testing.Verbose() {
		t.Logf("%s log (%s):\n%s", p.Name, strings.Join(p.Cmd.Args, " "), p.Tail(20000))
	}
}
