// Package proctest runs a process for a test: in its own process group,
// its output in a log file, stopped with SIGTERM and then SIGKILL. The e2e
// and network-namespace harnesses build on it.
package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
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

// Start starts cmd in a new process group, with stderr (and stdout, unless
// the caller set it, e.g. to a pipe) written to a log file in dir. drain,
// when not nil, runs before the process is waited for: the caller finishes
// reading its pipes there, as exec.Cmd.Wait requires.
func Start(cmd *exec.Cmd, dir, name string, drain func()) (*Proc, error) {
	logf, err := os.CreateTemp(dir, name+"-*.log")
	if err != nil {
		return nil, err
	}
	cmd.Stderr = logf
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
