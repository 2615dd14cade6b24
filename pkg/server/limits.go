package server

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
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

// progressChunk is the most a response writes under one deadline. A
// client that takes less than this within writeTimeout is cut; one that
// keeps taking it is never cut, however long the body.
const progressChunk = 64 << 10

// withWriteProgress gives every response a write deadline that moves on
// with each write of at most progressChunk bytes: a client that stops
// reading is cut after timeout, a slow one that keeps reading is not
// (unlike http.Server.WriteTimeout, a bound on the whole response).
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

// progressWriter forwards ReadFrom in chunks, each a sendfile of its own
// when the source is a file (io.LimitedReader over *os.File, as
// ServeContent passes it, is what sendfile takes).
type progressWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (p *progressWriter) extend() { _ = p.rc.SetWriteDeadline(time.Now().Add(p.timeout)) }

func (p *progressWriter) WriteHeader(code int) {
	p.extend()
	p.ResponseWriter.WriteHeader(code)
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

func (p *progressWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := p.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{p}, src)
	}
	outer, limited := src.(*io.LimitedReader)
	if !limited {
		outer = &io.LimitedReader{R: src, N: 1<<63 - 1}
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

func (p *progressWriter) Flush() {
	p.extend()
	_ = p.rc.Flush()
}

func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// writerOnly hides ReadFrom, so io.Copy uses Write.
type writerOnly struct{ io.Writer }

// ReadFrom lets a file reach the socket by sendfile through the wrapper.
func (c *limitConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}
