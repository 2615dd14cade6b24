// Package proctest runs a process for a test: in its own process group,
// its output in a log file, stopped with SIGTERM and then SIGKILL, waited
// for until it answers. It also starts the berth binary on a config file
// (StartBerth). The e2e, security, crash and network-namespace tests and
// the load command build on it.
package proctest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Proc is a started process.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	Log  string // the log file: stderr, and stdout unless the caller took it

	done chan struct{} // closed when the process has exited
	err  error         // exit status; read after done
}

// Start starts cmd in a new process group, with stderr and stdout (each
// unless the caller set it, e.g. to a pipe) written to a log file in dir.
// drain, when not nil, runs before the process is waited for: the caller
// finishes reading its pipes there, as exec.Cmd.Wait requires.
func Start(cmd *exec.Cmd, dir, name string, drain func()) (*Proc, error) {
	logf, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	if cmd.Stderr == nil {
		cmd.Stderr = logf
	}
	if cmd.Stdout == nil {
		cmd.Stdout = logf
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true // Stop signals the whole group
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logf.Name(), done: make(chan struct{})}
	go func() {
		if drain != nil {
			drain()
		}
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Run is Start for t: the log goes to t's temp dir, the process is
// stopped (Stop(grace)) when t ends, and its log is shown when t failed or
// runs verbose.
func Run(t testing.TB, cmd *exec.Cmd, name string, grace time.Duration, drain func()) *Proc {
	t.Helper()
	p, err := Start(cmd, t.TempDir(), name, drain)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(grace)
		if t.Failed() || testing.Verbose() {
			t.Logf("%s log (%s):\n%s", name, strings.Join(cmd.Args, " "), p.Tail(12000))
		}
	})
	return p
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit status, once Done is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits for the process to exit.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Tail returns the last n bytes of the log.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Warnings returns the log's first n warning and error lines other than
// "request failed" (each failed request logs one: a flood's would hide
// the cause), with their line numbers: what went wrong first, which a
// long log's tail no longer shows.
func (p *Proc) Warnings(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	var out []string
	for i, l := range strings.Split(string(b), "\n") {
		if len(out) == n {
			break
		}
		warn := strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`)
		if warn && !strings.Contains(l, `msg="request failed"`) && !strings.Contains(l, `"msg":"request failed"`) {
			out = append(out, fmt.Sprintf("%d: %s", i+1, l))
		}
	}
	return strings.Join(out, "\n")
}

// noKeepAlive is the readiness probes' client: no connection outlives its
// probe, so none counts against a process's connections or goroutines.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// WaitHTTP polls url until it answers want (nil), the process exits or
// within passes (an error with the log's tail).
func (p *Proc) WaitHTTP(url string, want int, within time.Duration) error {
	return p.poll(within, url, func() (bool, string) {
		resp, err := noKeepAlive.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == want, resp.Status
	})
}

// WaitSocket polls until the unix socket at path accepts a connection, the
// process exits or within passes.
func (p *Proc) WaitSocket(path string, within time.Duration) error {
	return p.poll(within, path, func() (bool, string) {
		c, err := net.Dial("unix", path)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
}

func (p *Proc) poll(within time.Duration, what string, ready func() (bool, string)) error {
	deadline := time.Now().Add(within)
	var last string
	for time.Now().Before(deadline) {
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, p.Err(), p.Tail(4000))
		}
		var ok bool
		if ok, last = ready(); ok {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // polling a process that gives no signal
	}
	return fmt.Errorf("%s not ready at %s after %s: %s\n%s", p.Name, what, within, last, p.Tail(4000))
}
