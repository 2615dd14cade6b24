package server

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// sendPair is a sendListener's server side and a client's side of one
// loopback connection.
func sendPair(t *testing.T, timeout time.Duration, clientRcvBuf int) (*sendListener, *sendConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl := newSendListener(ln, timeout)
	t.Cleanup(func() { sl.Close() })
	dialed := make(chan *net.TCPConn, 1)
	go func() {
		d := net.Dialer{Control: nil}
		c, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			dialed <- nil
			return
		}
		tc := c.(*net.TCPConn)
		if clientRcvBuf > 0 {
			tc.SetReadBuffer(clientRcvBuf)
		}
		dialed <- tc
	}()
	sc, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc := <-dialed
	if cc == nil {
		t.Fatal("dial failed")
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return sl, sc.(*sendConn), cc
}

func randomFile(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	name := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

// A large file section goes out in one blocking send, byte for byte, from
// the file's offset, and leaves the offset after it (the progress watch
// reads it); the socket is non-blocking again after it.
func TestSendConnSendsASectionBlocking(t *testing.T) {
	sl, sc, cc := sendPair(t, 5*time.Second, 0)
	f, data := randomFile(t, 8<<20)
	const off = 1000
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	want := data[off : off+6<<20]
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(cc, int64(len(want))))
		got <- b
	}()
	lr := &io.LimitedReader{R: f, N: int64(len(want))}
	n, err := sc.ReadFrom(lr)
	if err != nil || n != int64(len(want)) || lr.N != 0 {
		t.Fatalf("ReadFrom: %d bytes, %v; %d left", n, err, lr.N)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("client got %d bytes, not the section", len(b))
	}
	if pos, _ := f.Seek(0, io.SeekCurrent); pos != off+int64(len(want)) {
		t.Errorf("file offset %d after the send, want %d", pos, off+len(want))
	}
	if sl.sends.Load() != 1 {
		t.Errorf("%d blocking sends, want 1", sl.sends.Load())
	}
	// Non-blocking again: a write deadline in the past fails at once.
	sc.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := sc.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write after the send with a past deadline: %v, want a deadline error", err)
	}
}

// A section under blockingMin, and any other reader, takes Go's own path.
func TestSendConnSmallSectionsTakeGosPath(t *testing.T) {
	sl, sc, cc := sendPair(t, 5*time.Second, 0)
	f, data := randomFile(t, 64<<10)
	go io.Copy(io.Discard, cc)
	if n, err := sc.ReadFrom(&io.LimitedReader{R: f, N: int64(len(data))}); err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if n, err := sc.ReadFrom(bytes.NewReader(data)); err != nil || n != int64(len(data)) {
		t.Fatalf("ReadFrom bytes: %d, %v", n, err)
	}
	if sl.sends.Load() != 0 {
		t.Errorf("%d blocking sends, want 0", sl.sends.Load())
	}
}

// A client that stops reading is cut once it took nothing for the write
// timeout (each kernel wait ends after a quarter of it); the bound here
// is loose, for a loaded machine.
func TestSendConnCutsAStalledClient(t *testing.T) {
	_, sc, _ := sendPair(t, 500*time.Millisecond, 16<<10)
	f, _ := randomFile(t, 32<<20)
	start := time.Now()
	n, err := sc.ReadFrom(&io.LimitedReader{R: f, N: 32 << 20})
	took := time.Since(start)
	if !errors.Is(err, errStalled) || n >= 32<<20 {
		t.Fatalf("stalled client: %d bytes, %v; want errStalled", n, err)
	}
	t.Logf("cut after %s, %d bytes sent", took, n)
	if took < 500*time.Millisecond || took > 20*time.Second {
		t.Errorf("stalled client cut after %s, want about 0.5-0.6 s", took)
	}
}

// A client reading slowly but steadily is never cut, though the whole
// send takes longer than the write timeout.
func TestSendConnSlowClientNotCut(t *testing.T) {
	const size = 2 << 20
	_, sc, cc := sendPair(t, 2*time.Second, 16<<10)
	sc.SetWriteBuffer(32 << 10)
	f, data := randomFile(t, size)
	got := make(chan []byte, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 64<<10)
		for b.Len() < size {
			n, err := cc.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond) // ~3 MiB/s at most: the send outlasts one timeout
		}
		got <- b.Bytes()
	}()
	start := time.Now()
	n, err := sc.ReadFrom(&io.LimitedReader{R: f, N: size})
	if err != nil || n != size {
		t.Fatalf("slow client: %d bytes, %v after %s", n, err, time.Since(start))
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("slow client got %d bytes, not the file", len(b))
	}
	t.Logf("slow client served in %s", time.Since(start))
}

// Closing the connection (the server's Close after the shutdown grace)
// ends a blocking send to a stalled client at once, even with no write
// timeout.
func TestSendConnCloseEndsASend(t *testing.T) {
	_, sc, _ := sendPair(t, 0, 16<<10)
	f, _ := randomFile(t, 32<<20)
	done := make(chan error, 1)
	go func() {
		_, err := sc.ReadFrom(&io.LimitedReader{R: f, N: 32 << 20})
		done <- err
	}()
	time.Sleep(200 * time.Millisecond) // the send fills the buffers and blocks
	closed := make(chan error, 1)
	go func() { closed <- sc.Close() }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("send to a stalled client closed under it: no error")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not end the blocking send")
	}
	<-closed
}

// A read of the connection made while a blocking send runs (net/http's
// background read does that) still ends when its deadline passes after
// the send: it never blocks its thread in the kernel for good, which
// would hang net/http's abortPendingRead and the connection with it.
func TestSendConnReadDuringASendEnds(t *testing.T) {
	_, sc, _ := sendPair(t, time.Second, 16<<10)
	f, _ := randomFile(t, 32<<20)
	sent := make(chan error, 1)
	go func() {
		_, err := sc.ReadFrom(&io.LimitedReader{R: f, N: 32 << 20})
		sent <- err
	}()
	time.Sleep(200 * time.Millisecond) // the send is blocking by now (the client never reads)
	read := make(chan error, 1)
	go func() {
		_, err := sc.Read(make([]byte, 1))
		read <- err
	}()
	if err := <-sent; !errors.Is(err, errStalled) {
		t.Fatalf("send to a stalled client: %v, want errStalled", err)
	}
	sc.SetReadDeadline(time.Now().Add(-time.Second)) // as abortPendingRead does
	select {
	case err := <-read:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read: %v, want a deadline error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a read begun during the blocking send did not end at its deadline")
	}
}

// A write deadline later than the armed one by less than timeout/8 keeps
// the armed one (one timer change per connection, not two per response);
// an earlier one is set at once; a clear takes effect before the next
// write, so a write after it never meets the old deadline.
func TestSendConnWriteDeadlineMovesOnlyWhenItMatters(t *testing.T) {
	_, sc, cc := sendPair(t, 8*time.Second, 0)
	go io.Copy(io.Discard, cc)
	now := time.Now()
	sc.SetWriteDeadline(now.Add(8 * time.Second))
	sc.SetWriteDeadline(time.Time{})                                   // net/http after a response: lazy
	sc.SetWriteDeadline(now.Add(8*time.Second + 500*time.Millisecond)) // within 1 s: kept
	if want := now.Add(8 * time.Second); !sc.armed.Equal(want) {
		t.Errorf("armed %v, want the first deadline kept", sc.armed.Sub(now))
	}
	sc.SetWriteDeadline(now.Add(10 * time.Second)) // 2 s later: set
	if want := now.Add(10 * time.Second); !sc.armed.Equal(want) {
		t.Errorf("armed %v, want 10s", sc.armed.Sub(now))
	}
	sc.SetWriteDeadline(now.Add(-time.Second)) // earlier: set, and it acts
	if _, err := sc.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write past an earlier deadline: %v, want a deadline error", err)
	}
	sc.SetWriteDeadline(time.Time{}) // cleared: the past deadline is gone before the write
	if _, err := sc.Write([]byte("x")); err != nil {
		t.Errorf("write after the deadline was cleared: %v", err)
	}
	if !sc.armed.IsZero() {
		t.Errorf("armed %v after a clear and a write, want none", sc.armed)
	}
}

// corked reads TCP_CORK of c's socket.
func corked(t *testing.T, c *sendConn) bool {
	t.Helper()
	rc, err := c.TCPConn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK) }); err != nil || gerr != nil {
		t.Fatalf("TCP_CORK: %v %v", err, gerr)
	}
	return v != 0
}

// A blocking send is corked while it runs (full segments only: uncorked,
// with TCP_NODELAY, each 64 KiB step of the kernel's sendfile went out as
// a segment and a runt) and uncorked after, so the tail and the next
// response on the connection go at once; the client gets every byte.
func TestSendConnCorksTheBlockingSend(t *testing.T) {
	_, sc, cc := sendPair(t, 5*time.Second, 64<<10)
	f, data := randomFile(t, 8<<20)
	if corked(t, sc) {
		t.Fatal("corked before the send")
	}
	done := make(chan error, 1)
	go func() {
		_, err := sc.ReadFrom(&io.LimitedReader{R: f, N: int64(len(data))})
		done <- err
	}()
	head := make([]byte, 1)
	if _, err := io.ReadFull(cc, head); err != nil { // the send is under way and, with the client not reading, blocked
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !corked(t, sc) {
		if time.Now().After(deadline) {
			t.Fatal("the blocking send is not corked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(cc, int64(len(data)-1)))
		got <- b
	}()
	if err := <-done; err != nil {
		t.Fatalf("send: %v", err)
	}
	if b := <-got; !bytes.Equal(append(head, b...), data) {
		t.Fatalf("client got %d bytes, not the file", 1+len(b))
	}
	if corked(t, sc) {
		t.Fatal("still corked after the send: the next response would wait for the cork's 200 ms")
	}
}
