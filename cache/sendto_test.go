package cache

import (
	"bytes"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// sectionWriter is a writer with a ReadFrom, as net/http's response on a
// TCP connection is: it records what each ReadFrom was given (a section
// of a file is what sendfile takes) and keeps the bytes.
type sectionWriter struct {
	mu       sync.Mutex
	buf      bytes.Buffer
	sections int      // ReadFroms given an *os.File behind an io.LimitedReader
	others   int      // ReadFroms given anything else
	writes   int      // Writes: bytes copied through user space
	got      chan int // the bytes so far, after each call
}

func newSectionWriter() *sectionWriter { return &sectionWriter{got: make(chan int, 1<<16)} }

func (w *sectionWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	n, _ := w.buf.Write(p)
	w.got <- w.buf.Len()
	return n, nil
}

func (w *sectionWriter) ReadFrom(src io.Reader) (int64, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lr, ok := src.(*io.LimitedReader); ok {
		if _, ok := lr.R.(*os.File); ok {
			w.sections++
		} else {
			w.others++
		}
	} else {
		w.others++
	}
	n, err := w.buf.ReadFrom(src)
	w.got <- w.buf.Len()
	return n, err
}

// fillFed starts a fill of d in s from a source that sends data whole, as
// fast as the fill takes it, and returns the fill's blob for the test to
// close, and the source (its opens).
func fillFed(t *testing.T, s *Store, d digest.Digest, data []byte) (*Blob, *gatedSource) {
	t.Helper()
	src := newGated(data)
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	pw := <-src.pw
	go func() { pw.Write(data); pw.Close() }()
	return b, src
}

// A reader of a fill under way sends the bytes on disk as file sections
// (sendfile), as they land, never copying them through a buffer of its
// own; and the last byte only once the digest checks.
func TestSendToSendsFileSectionsAsBytesLand(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 4<<20)
	src := newGated(data)
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	w := newSectionWriter()
	done := make(chan error, 1)
	go func() {
		defer b.Close()
		n, err := b.SendTo(w, -1)
		if err == nil && n != int64(len(data)) {
			err = errors.New("short")
		}
		done <- err
	}()
	pw := <-src.pw
	half := len(data) / 2
	if _, err := pw.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for got := 0; got < half-1; {
		select {
		case got = <-w.got:
		case <-deadline:
			t.Fatalf("%d bytes sent while the fill holds %d", got, half)
		}
	}
	pw.Write(data[half:])
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(w.buf.Bytes(), data) {
		t.Fatal("different bytes")
	}
	if w.sections == 0 || w.others != 0 || w.writes != 0 {
		t.Fatalf("ReadFrom of file sections %d, of other readers %d, Writes %d: want file sections only", w.sections, w.others, w.writes)
	}
	assertStored(t, s, d, data)
}

// SendTo of n bytes from a Seek (a Range) sends exactly those bytes.
func TestSendToRange(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	b, _ := fillFed(t, s, d, data)
	defer b.Close()
	if _, err := b.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	w := newSectionWriter()
	if n, err := b.SendTo(w, 5000); err != nil || n != 5000 {
		t.Fatalf("sent %d: %v", n, err)
	}
	if !bytes.Equal(w.buf.Bytes(), data[1000:6000]) {
		t.Fatal("different bytes")
	}
	// The reader goes on from where the section ended.
	rest, err := io.ReadAll(b)
	if err != nil || !bytes.Equal(rest, data[6000:]) {
		t.Fatalf("rest: %v", err)
	}
}

// A fill whose bytes fail the digest never gives SendTo every byte: it
// ends with the mismatch.
func TestSendToWrongBytes(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	bad := bytes.Clone(data)
	bad[len(bad)-1] ^= 0xff
	b, _ := fillFed(t, s, d, bad)
	defer b.Close()
	w := newSectionWriter()
	n, err := b.SendTo(w, -1)
	if !errors.Is(err, oci.ErrDigestMismatch) || n == int64(len(bad)) {
		t.Fatalf("sent %d of %d bytes, err %v: want fewer and a digest mismatch", n, len(bad), err)
	}
	if b.Failed() == nil {
		t.Fatal("Failed is nil after a mismatch")
	}
	waitNoFills(t, s)
	assertTmpEmpty(t, s)
}

// A fill passing through (disk full) still sends every byte, from the
// file and then the ring.
func TestSendToPassThrough(t *testing.T) {
	df := &diskFull{limit: 256 << 10}
	df.full.Store(true)
	s, err := Open(t.TempDir(), Options{WriteAt: df.writeAt})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, d := randomBlob(t, 2<<20)
	b, _ := fillFed(t, s, d, data)
	defer b.Close()
	w := newSectionWriter()
	if n, err := b.SendTo(w, -1); err != nil || n != int64(len(data)) {
		t.Fatalf("sent %d: %v", n, err)
	}
	if !bytes.Equal(w.buf.Bytes(), data) {
		t.Fatal("different bytes")
	}
	if s.Has(d) {
		t.Fatal("stored while the disk was full")
	}
}
