package server

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// deadlineWriter is a response writer over a simulated socket: it takes
// pace bytes of a ReadFrom source, then waits gap (the client reading), and
// fails as a connection would once the write deadline has passed. It counts
// the calls that cost a syscall on a real connection.
type deadlineWriter struct {
	hdr       http.Header
	pace      int64
	gap       time.Duration
	readFroms int // inner ReadFrom calls: one sendfile section each
	got       int64
	lastByte  time.Time // when the simulated client last took bytes

	mu        sync.Mutex // guards the deadline: a connection's is set from any goroutine
	deadline  time.Time
	deadlines int // SetWriteDeadline calls
}

var errTimeout = errors.New("i/o timeout")

func (d *deadlineWriter) Header() http.Header { return d.hdr }
func (d *deadlineWriter) WriteHeader(int)     {}
func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.got += int64(len(p))
	return len(p), nil
}

func (d *deadlineWriter) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deadlines++
	d.deadline = t
	return nil
}

func (d *deadlineWriter) ReadFrom(r io.Reader) (int64, error) {
	d.readFroms++
	var n int64
	for {
		d.mu.Lock()
		passed := !d.deadline.IsZero() && time.Now().After(d.deadline)
		d.mu.Unlock()
		if passed {
			return n, errTimeout
		}
		m, err := io.CopyN(io.Discard, r, d.pace)
		n += m
		d.got += m
		if m > 0 {
			d.lastByte = time.Now()
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		time.Sleep(d.gap)
	}
}

func tempFile(t *testing.T, size int64) *os.File {
	t.Helper()
	name := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(name, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func serveFile(w http.ResponseWriter, f *os.File) {
	h := withWriteProgress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, f)
	}), 3*time.Second)
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/blob", nil))
}

// A file goes to the connection in one ReadFrom (one sendfile section, as
// nginx sends it), under one deadline, not in 64 KiB pieces of a syscall
// and a deadline each: 1,024 of each for this 64 MiB file before.
func TestProgressWriterSendsAFileInOneSection(t *testing.T) {
	const size = 64 << 20
	f := tempFile(t, size)
	d := &deadlineWriter{hdr: http.Header{}, pace: size}
	serveFile(d, f)
	if d.got != size {
		t.Fatalf("sent %d bytes, want %d", d.got, size)
	}
	if d.readFroms != 1 || d.deadlines > 2 {
		t.Fatalf("a fast client of a %d byte file: %d sendfile sections, %d deadlines set; want 1 and at most 2", size, d.readFroms, d.deadlines)
	}
}

// A client that takes 64 KiB a second of a 1 MiB file under a 3s write
// timeout gets all of it in one section though it takes 16s: the watch
// moves the deadline on while the file's offset moves. One that takes 64
// KiB and then stops is cut between 3s and 3.75s after its last byte.
func TestProgressWriterWatchesTheFileSection(t *testing.T) {
	t.Run("slow", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := tempFile(t, 1<<20)
			d := &deadlineWriter{hdr: http.Header{}, pace: 64 << 10, gap: time.Second}
			start := time.Now()
			serveFile(d, f)
			if d.got != 1<<20 || d.readFroms != 1 {
				t.Fatalf("a slow client got %d of %d bytes in %d sections after %s", d.got, 1<<20, d.readFroms, time.Since(start))
			}
		})
	})
	t.Run("stalled", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := tempFile(t, 1<<20)
			d := &deadlineWriter{hdr: http.Header{}, pace: 64 << 10, gap: time.Hour}
			serveFile(d, f)
			cut := d.deadline.Sub(d.lastByte)
			if d.got >= 1<<20 || cut < 3*time.Second || cut > 3750*time.Millisecond {
				t.Fatalf("a stalled client got %d bytes and was cut %s after its last byte; want a cut in [3s, 3.75s]", d.got, cut)
			}
		})
	})
}

// A small response sets the deadline once, not once per write.
func TestProgressWriterSmallResponseOneDeadline(t *testing.T) {
	d := &deadlineWriter{hdr: http.Header{}}
	h := withWriteProgress(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("{}"))
		w.Write([]byte("{}"))
		http.NewResponseController(w).Flush()
	}), time.Minute)
	h.ServeHTTP(d, httptest.NewRequest(http.MethodGet, "/", nil))
	if d.deadlines != 1 || d.got != 4 {
		t.Fatalf("a 4 byte response set the deadline %d times, sent %d bytes", d.deadlines, d.got)
	}
}
