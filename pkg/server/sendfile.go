package server

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A cached blob goes to the client by sendfile. Go's own sendfile
// (net.TCPConn.ReadFrom) runs on a non-blocking socket: each time the
// socket buffer fills (every 1-2 MiB on loopback, about 150 times for a
// 256 MiB blob) the goroutine parks on the netpoller and another thread
// wakes it, which shows as futex, nanosleep, sched_yield and epoll_pwait
// calls around the sendfile calls (strace of 3 GETs of 256 MiB: 759
// sendfile, 591 futex, 609 nanosleep, 194 sched_yield, 761 epoll_pwait),
// and as time lost whenever those threads wait for a CPU on a busy
// machine. nginx waits in its one thread.
//
// sendConn sends a large file section with the socket in blocking mode
// instead: the kernel waits for room in the socket buffer inside one
// sendfile call, so the thread sleeps once per blob, not once per buffer.
// The blocking send is bounded:
//   - in time: SO_SNDTIMEO makes each wait return after a quarter of the
//     write timeout, and a send that made no progress for the write
//     timeout fails, as the progress deadline (withWriteProgress) cuts a
//     stalled client, however slow a client that keeps reading is;
//   - in threads: a blocked sendfile holds an OS thread (not a P), so at
//     most maxBlockingSends run at once; the rest take Go's own path;
//   - by Close: a connection closed while it sends (http.Server.Close
//     after the shutdown grace) is shut down first, which ends the send;
//   - for the connection's reader: SO_RCVTIMEO keeps a read that lands in
//     the blocking window (net/http's background read) from blocking its
//     thread for good; it returns EAGAIN after readWait and waits on Go's
//     poller as usual.

// maxBlockingSends bounds the sends holding a thread in a blocking
// sendfile at once.
const maxBlockingSends = 16

// readWait is the longest a read of the socket waits in the kernel while a
// blocking send runs (see sendfile).
const readWait = 5 * time.Millisecond

// blockingMin is the smallest file section sent in blocking mode: a
// smaller one fits the socket buffer and never waits.
const blockingMin = 1 << 20

// sendListener wraps the TCP connections ln accepts in sendConns.
type sendListener struct {
	net.Listener
	timeout time.Duration // the write timeout; 0: none
	slots   chan struct{} // one token per blocking send under way
	sends   atomic.Int64  // blocking sends begun, for tests
}

func newSendListener(ln net.Listener, timeout time.Duration) *sendListener {
	return &sendListener{Listener: ln, timeout: timeout, slots: make(chan struct{}, maxBlockingSends)}
}

func (l *sendListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	return &sendConn{TCPConn: tc, l: l}, nil
}

// sendConn is a TCP connection whose ReadFrom sends large file sections
// in blocking mode.
type sendConn struct {
	*net.TCPConn
	l *sendListener

	mu      sync.Mutex // guards sending and closed
	sending bool       // a blocking send is under way
	closed  bool
	timeo   bool // SO_SNDTIMEO is set (once per connection)

	dmu   sync.Mutex // guards armed and want
	armed time.Time  // the write deadline Go's poller holds
	want  time.Time  // the write deadline asked for last; zero: none
}

// SetWriteDeadline asks for a write deadline, and keeps the one armed when
// that costs little: net/http clears the deadline after every response
// and withWriteProgress sets it to timeout from now at the start of the
// next, two timer changes per request on a keep-alive connection serving
// small answers (manifest hits). A deadline later than the armed one by
// less than an eighth of the timeout keeps the armed one (at least 7/8
// timeout away, what the progress writer guarantees within a response),
// and a clear is done only before the next write that would meet the
// armed deadline (disarm). An earlier deadline is always set at once.
func (c *sendConn) SetWriteDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.want = t
	switch {
	case t.IsZero():
		return nil // disarm clears it before a write
	case c.l.timeout > 0 && !c.armed.IsZero() && !t.Before(c.armed) && t.Sub(c.armed) < c.l.timeout/8:
		return nil
	}
	c.armed = t
	return c.TCPConn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines at once.
func (c *sendConn) SetDeadline(t time.Time) error {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.want, c.armed = t, t
	return c.TCPConn.SetDeadline(t)
}

// disarm clears an armed write deadline that was asked to be cleared,
// before a write.
func (c *sendConn) disarm() {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	if c.want.IsZero() && !c.armed.IsZero() {
		c.armed = time.Time{}
		_ = c.TCPConn.SetWriteDeadline(time.Time{})
	}
}

func (c *sendConn) Write(b []byte) (int, error) {
	c.disarm()
	return c.TCPConn.Write(b)
}

// ReadFrom sends r: a file section of at least blockingMin bytes (an
// *io.LimitedReader over an *os.File, as http.ServeContent passes it) in
// blocking mode when a slot is free, anything else through TCPConn's
// ReadFrom (sendfile or splice on a non-blocking socket).
func (c *sendConn) ReadFrom(r io.Reader) (int64, error) {
	c.disarm()
	lr, ok := r.(*io.LimitedReader)
	if !ok || lr.N < blockingMin {
		return c.TCPConn.ReadFrom(r)
	}
	f, ok := lr.R.(*os.File)
	if !ok {
		return c.TCPConn.ReadFrom(r)
	}
	select {
	case c.l.slots <- struct{}{}:
		defer func() { <-c.l.slots }()
	default:
		return c.TCPConn.ReadFrom(r)
	}
	c.l.sends.Add(1)
	if !c.begin() {
		return 0, net.ErrClosed
	}
	n, err := c.sendBlocking(f, lr.N)
	c.end()
	lr.N -= n
	if err != nil {
		return n, &net.OpError{Op: "sendfile", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return n, nil
}

func (c *sendConn) begin() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sending = !c.closed
	return c.sending
}

func (c *sendConn) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sending = false
}

// Close ends a blocking send under way (shutdown wakes it with EPIPE),
// then closes the connection: TCPConn.Close waits for the send to return.
func (c *sendConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.sending {
		if rc, err := c.TCPConn.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		}
	}
	c.mu.Unlock()
	return c.TCPConn.Close()
}

// errStalled is a blocking send that made no progress for the write
// timeout.
var errStalled = errors.New("client took no bytes for the write timeout")

// sendBlocking sends n bytes of f from its offset (which moves as bytes
// go, as withWriteProgress's file watch expects) with the socket in
// blocking mode for the call. It returns the bytes sent.
func (c *sendConn) sendBlocking(f *os.File, n int64) (int64, error) {
	sc, err := c.TCPConn.SyscallConn()
	if err != nil {
		return 0, err
	}
	fc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var sent int64
	var serr error
	cerr := fc.Control(func(in uintptr) {
		werr := sc.Write(func(out uintptr) bool {
			sent, serr = c.sendfile(int(out), int(in), n)
			return true
		})
		if serr == nil {
			serr = werr
		}
	})
	if serr == nil {
		serr = cerr
	}
	return sent, serr
}

// sendfile is sendBlocking's loop on the socket out and the file in.
func (c *sendConn) sendfile(out, in int, n int64) (int64, error) {
	if !c.timeo {
		// net/http's background read (it watches for the client going
		// away) may call read on the socket while it blocks: a read finding
		// no data returns after readWait, as on a non-blocking socket, and
		// its goroutine waits on the poller as before. Both timeouts act
		// on blocking calls only.
		rtv := syscall.NsecToTimeval(int64(readWait))
		if err := syscall.SetsockoptTimeval(out, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &rtv); err != nil {
			return 0, err
		}
		if c.l.timeout > 0 {
			tv := syscall.NsecToTimeval(max(int64(c.l.timeout/4), int64(time.Millisecond)))
			if err := syscall.SetsockoptTimeval(out, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv); err != nil {
				return 0, err
			}
		}
		c.timeo = true
	}
	if err := syscall.SetNonblock(out, false); err != nil {
		return 0, err
	}
	defer func() { _ = syscall.SetNonblock(out, true) }() // as Go's poller expects it
	// Corked for the send, as nginx's tcp_nopush: the kernel's sendfile
	// moves 64 KiB a step, and with TCP_NODELAY (Go's default) a step is
	// pushed at once, often as a full segment and a runt (64 MiB on
	// loopback: 2,526 segments uncorked, 1,826 corked, ACKs included);
	// corked, only full segments go until the uncork flushes the tail. On
	// the 256 MiB hit: 0.084 against 0.068 CPU-s a GET, nginx 0.067
	// (test/bench/RESULTS.md).
	if err := syscall.SetsockoptInt(out, syscall.IPPROTO_TCP, syscall.TCP_CORK, 1); err == nil {
		defer func() { _ = syscall.SetsockoptInt(out, syscall.IPPROTO_TCP, syscall.TCP_CORK, 0) }()
	}
	var sent int64
	progress := time.Now()
	for sent < n {
		m, err := syscall.Sendfile(out, in, nil, int(min(n-sent, 1<<30)))
		if m > 0 {
			sent += int64(m)
			progress = time.Now()
		}
		switch {
		case errors.Is(err, syscall.EINTR):
		case errors.Is(err, syscall.EAGAIN): // SO_SNDTIMEO passed without room
			if c.l.timeout > 0 && time.Since(progress) >= c.l.timeout {
				return sent, errStalled
			}
		case err != nil:
			return sent, err
		case m == 0:
			return sent, io.ErrUnexpectedEOF // the file is shorter than its section
		}
	}
	return sent, nil
}
