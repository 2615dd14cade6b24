package server

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connLimit bounds the client connections open at once, over every
// listener it wraps. At the bound it closes an idle keep-alive connection
// to make room (keep-alive costs nothing while there is room, and never
// locks new clients out); with none idle, a new connection waits in the
// kernel's accept queue until one closes or turns idle (then it is closed
// for the waiting one).
type connLimit struct {
	slots   chan struct{} // one token per open connection
	waiting atomic.Int32  // Accepts waiting for a slot

	mu   sync.Mutex
	idle map[net.Conn]struct{} // connections between requests, from ConnState
}

func newConnLimit(n int) *connLimit {
	return &connLimit{slots: make(chan struct{}, n), idle: map[net.Conn]struct{}{}}
}

// connState is the http.Server's ConnState hook: it tracks which
// connections are idle. It may run concurrently for different conns.
func (l *connLimit) connState(c net.Conn, st http.ConnState) {
	if st == http.StateIdle && l.waiting.Load() > 0 {
		c.Close() // a new client waits for this slot
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if st == http.StateIdle {
		l.idle[c] = struct{}{}
	} else {
		delete(l.idle, c)
	}
}

// closeIdle closes one idle connection, if there is one.
func (l *connLimit) closeIdle() {
	l.mu.Lock()
	var victim net.Conn
	for c := range l.idle {
		victim = c
		delete(l.idle, c)
		break
	}
	l.mu.Unlock()
	if victim != nil {
		victim.Close() // the server sees the read fail and forgets it
	}
}

func (l *connLimit) listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, l: l, done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	l        *connLimit
	done     chan struct{} // closed by Close: a waiting Accept gives up
	doneOnce sync.Once
}

// Accept takes a slot, then a connection; the slot returns when the
// connection closes.
func (ll *limitListener) Accept() (net.Conn, error) {
	select {
	case ll.l.slots <- struct{}{}:
	default:
		ll.l.waiting.Add(1)
		ll.l.closeIdle()
		select {
		case ll.l.slots <- struct{}{}:
			ll.l.waiting.Add(-1)
		case <-ll.done:
			ll.l.waiting.Add(-1)
			return nil, net.ErrClosed
		}
	}
	c, err := ll.Listener.Accept()
	if err != nil {
		<-ll.l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-ll.l.slots }}, nil
}

func (ll *limitListener) Close() error {
	ll.doneOnce.Do(func() { close(ll.done) })
	return ll.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// progressChunk is the most a response writes from memory under one
// deadline. A client that takes less than this within writeTimeout is cut;
// one that keeps taking it is never cut, however long the body.
const progressChunk = 64 << 10

// withWriteProgress gives every response a write deadline that moves on
// while the client takes bytes: a client that stops reading is cut after
// about timeout (at most 1.25 timeout), a slow one that keeps reading is
// not (unlike http.Server.WriteTimeout, a bound on the whole response).
//
// It costs next to nothing per request: the deadline is set once at the
// start of a response and again only when an eighth of timeout has passed
// since, and a file goes out as one sendfile section (net/http's own
// ReadFrom), watched by a timer that reads the file's offset, not cut into
// 64 KiB pieces of a syscall and a deadline each.
func withWriteProgress(h http.Handler, timeout time.Duration) http.Handler {
	if timeout <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pw := &progressWriter{ResponseWriter: w, rc: http.NewResponseController(w), timeout: timeout}
		pw.extend() // a deadline left by the connection's previous response must not cut this one
		h.ServeHTTP(pw, r)
	})
}

// progressWriter moves the write deadline on as a response goes out. It is
// used by one handler goroutine; a file section's watch (watchFile) runs
// beside it and only sets the deadline.
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	set     time.Time // when extend last set the deadline; zero: never
}

// extend makes the deadline at least 7/8 timeout away: it sets it to
// now+timeout when an eighth of timeout has passed since it last did.
func (p *progressWriter) extend() {
	now := time.Now()
	if !p.set.IsZero() && now.Sub(p.set) < p.timeout/8 {
		return
	}
	p.set = now
	_ = p.rc.SetWriteDeadline(now.Add(p.timeout))
}

func (p *progressWriter) Write(b []byte) (int, error) {
	var n int
	for len(b) > 0 {
		c := b[:min(len(b), progressChunk)]
		p.extend()
		m, err := p.ResponseWriter.Write(c)
		n += m
		if err != nil {
			return n, err
		}
		b = b[m:]
	}
	return n, nil
}

// ReadFrom forwards to the inner ReadFrom. A file (an *os.File or a
// section of one through io.LimitedReader, as ServeContent passes it, which
// is what sendfile takes) goes in one call under watchFile; any other
// source in chunks of progressChunk, each under a deadline of its own.
func (p *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := p.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{p}, src)
	}
	outer, limited := src.(*io.LimitedReader)
	if !limited {
		outer = &io.LimitedReader{R: src, N: 1<<63 - 1}
	}
	if f, ok := outer.R.(*os.File); ok {
		p.extend()
		if outer.N > progressChunk { // a smaller section has its deadline, as a chunk does
			stop := p.watchFile(f)
			defer stop()
		}
		return rf.ReadFrom(src)
	}
	var total int64
	for outer.N > 0 {
		chunk := &io.LimitedReader{R: outer.R, N: min(outer.N, progressChunk)}
		want := chunk.N
		p.extend()
		n, err := rf.ReadFrom(chunk)
		total += n
		outer.N -= n
		if err != nil || n < want {
			return total, err
		}
	}
	return total, nil
}

// watchFile moves the deadline on while f's offset moves (sendfile, or a
// copy through a buffer, advances it as the socket takes bytes): every
// quarter of timeout it reads the offset, and if it moved since the last
// look sets the deadline to timeout from then. A client that keeps taking
// bytes is never cut; one that stops is cut between timeout and 1.25
// timeout after its last byte. The returned stop ends the watch; once it
// returns the watch sets no deadline.
func (p *progressWriter) watchFile(f *os.File) (stop func()) {
	w := &fileWatch{p: p, f: f, every: p.timeout / 4}
	w.last, _ = f.Seek(0, io.SeekCurrent)
	w.mu.Lock()
	w.t = time.AfterFunc(w.every, w.look)
	w.mu.Unlock()
	return w.stop
}

type fileWatch struct {
	p     *progressWriter
	f     *os.File
	every time.Duration

	mu      sync.Mutex // guards the fields below; held while a look sets the deadline
	t       *time.Timer
	last    int64 // f's offset at the last look
	stopped bool
}

func (w *fileWatch) look() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if off, err := w.f.Seek(0, io.SeekCurrent); err == nil && off != w.last {
		w.last = off
		_ = w.p.rc.SetWriteDeadline(time.Now().Add(w.p.timeout))
	}
	w.t.Reset(w.every)
}

func (w *fileWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.t.Stop()
}

func (p *progressWriter) Flush() {
	p.extend()
	_ = p.rc.Flush()
}

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// writerOnly hides ReadFrom, so io.Copy uses Write.
type writerOnly struct{ io.Writer }

// SyscallConn gives the socket's raw connection, as a *net.TCPConn does
// (registry.ConnContext waits on it for room in the send buffer).
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("not a socket")
	}
	return sc.SyscallConn()
}

// ReadFrom lets a file reach the socket by sendfile through the wrapper.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}
