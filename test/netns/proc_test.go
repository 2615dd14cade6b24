package netns

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is a long-running process inside a namespace (`ip netns exec`
// execs it, so its pid is the program's). Its stdout lines arrive on
// lines; its stderr goes to a log file, shown when the test fails. The
// testNet stops it in cleanup.
type proc struct {
	name  string
	cmd   *exec.Cmd
	log   string
	stdin io.WriteCloser // nil unless asked for
	lines chan string    // stdout, line by line; closed at EOF
	done  chan struct{}  // closed when the process has exited
	err   error          // exit status; read after done
}

// start runs bin in h's namespace. withStdin gives the process a pipe to
// write to (proc.stdin).
func (n *testNet) start(t *testing.T, h host, name string, env []string, withStdin bool, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.CreateTemp(n.dir, name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	cmd.Env = childEnv(env...)
	cmd.Stderr = logf
	// Pdeathsig: a test binary killed by go test's -timeout runs no
	// cleanup; its children must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, log: logf.Name(), lines: make(chan string, 64), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if withStdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
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
			<-p.done
			return "", fmt.Errorf("%s ended (%v) before printing %q:\n%s", p.name, p.err, prefix, p.tail(4000))
		}
		if !strings.HasPrefix(l, prefix) {
			return "", fmt.Errorf("%s printed %q, want %q", p.name, l, prefix)
		}
		return l, nil
	case <-time.After(timeout):
		return "", fmt.Errorf("%s printed no %q within %s:\n%s", p.name, prefix, timeout, p.tail(4000))
	}
}

// wait waits for the process to exit and returns its exit error.
func (p *proc) wait(timeout time.Duration) error {
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: %w:\n%s", p.name, p.err, p.tail(4000))
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s:\n%s", p.name, timeout, p.tail(4000))
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p.stdin != nil {
		_ = p.stdin.Close()
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// report fails t on a data race in the log and shows the log when t failed.
func (p *proc) report(t *testing.T) {
	log := p.tail(1 << 20)
	if strings.Contains(log, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", p.name, log)
	} else if t.Failed() || testing.Verbose() {
		t.Logf("%s log (%s):\n%s", p.name, strings.Join(p.cmd.Args, " "), p.tail(20000))
	}
}

// tail returns the last n bytes of the log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
