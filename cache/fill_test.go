package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBlob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

// gatedSource serves data through a pipe the test feeds, so the test
// decides when bytes land. It counts the opens.
type gatedSource struct {
	data  []byte
	opens atomic.Int32
	pw    chan *io.PipeWriter
}

func newGated(data []byte) *gatedSource {
	return &gatedSource{data: data, pw: make(chan *io.PipeWriter, 4)}
}

func (g *gatedSource) open(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
	g.opens.Add(1)
	pr, pw := io.Pipe()
	g.pw <- pw
	return pr, int64(len(g.data)), "test", nil
}

func readAll(t *testing.T, b *Blob) ([]byte, error) {
	t.Helper()
	defer b.Close()
	return io.ReadAll(b)
}

func TestFillStreamsToManyReadersFromOneFetch(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 4<<20)
	src := newGated(data)
	const readers = 32
	results := make(chan []byte, readers)
	errs := make(chan error, readers)
	firstByte := make(chan struct{}, readers)
	var wg sync.WaitGroup
	for range readers {
		b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Close()
			var got bytes.Buffer
			buf := make([]byte, 1024)
			n, err := b.Read(buf)
			if err != nil {
				errs <- err
				return
			}
			got.Write(buf[:n])
			firstByte <- struct{}{}
			if _, err := io.Copy(&got, b); err != nil {
				errs <- err
				return
			}
			results <- got.Bytes()
		}()
	}
	pw := <-src.pw
	half := len(data) / 2
	if _, err := pw.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	for range readers { // every reader has bytes while the fetch is half done
		select {
		case <-firstByte:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(10 * time.Second):
			t.Fatal("no first byte before the fetch completed")
		}
	}
	if s.Has(d) {
		t.Fatal("blob committed before its last byte")
	}
	// A reader joining mid-download, with a seek inside the written part.
	late, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := late.Seek(int64(half/2), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	pw.Write(data[half:])
	pw.Close()
	wg.Wait()
	close(results)
	for got := range results {
		if !bytes.Equal(got, data) {
			t.Fatal("a reader got different bytes")
		}
	}
	if len(errs) > 0 {
		t.Fatal(<-errs)
	}
	rest, err := readAll(t, late)
	if err != nil || !bytes.Equal(rest, data[half/2:]) {
		t.Fatalf("late reader: %v, equal %v", err, bytes.Equal(rest, data[half/2:]))
	}
	if n := src.opens.Load(); n != 1 {
		t.Fatalf("source opened %d times, want 1", n)
	}
	assertStored(t, s, d, data)
}

func assertStored(t *testing.T, s *Store, d digest.Digest, data []byte) {
	t.Helper()
	waitNoFills(t, s) // readers have every byte once it is verified; the commit follows
	got, err := os.ReadFile(s.BlobPath(d))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored blob: %v", err)
	}
	info, err := s.Info(d)
	if err != nil || info.Size != int64(len(data)) {
		t.Fatalf("index: %+v, %v", info, err)
	}
	assertTmpEmpty(t, s)
}

func assertTmpEmpty(t *testing.T, s *Store) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if len(entries) != 0 {
		t.Fatalf("tmp/ holds %d files", len(entries))
	}
}

func TestFillWrongBytesStoreNothingAndFailEveryReader(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	src := newGated(bad)
	var blobs []*Blob
	for range 4 {
		b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, b)
	}
	pw := <-src.pw
	go func() { pw.Write(bad); pw.Close() }()
	for _, b := range blobs {
		got, err := readAll(t, b)
		if !errors.Is(err, oci.ErrDigestMismatch) {
			t.Fatalf("reader ended with %v after %d bytes, want a digest mismatch", err, len(got))
		}
		if len(got) == len(bad) {
			t.Fatal("reader was given every byte of a blob that failed its digest")
		}
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("wrong bytes were stored")
	}
	if _, err := s.Info(d); err == nil {
		t.Fatal("wrong bytes were indexed")
	}
	assertTmpEmpty(t, s)
}

func waitNoFills(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.fills)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("fill still registered")
		}
		time.Sleep(5 * time.Millisecond) // polling a state with no channel to wait on
	}
}

// breakingSource cuts its first stream after cut bytes, then serves the
// rest from the offset it is asked for.
type breakingSource struct {
	data    []byte
	cut     int
	offsets []int64
	mu      sync.Mutex
}

func (b *breakingSource) open(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.offsets = append(b.offsets, offset)
	if len(b.offsets) == 1 {
		return io.NopCloser(io.MultiReader(bytes.NewReader(b.data[:b.cut]), errReader{io.ErrUnexpectedEOF})), int64(len(b.data)), "test", nil
	}
	return io.NopCloser(bytes.NewReader(b.data[offset:])), int64(len(b.data)), "test", nil
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestFillResumesAtTheByteReached(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 3<<20)
	src := &breakingSource{data: data, cut: 1<<20 + 7}
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %v", err)
	}
	if want := []int64{0, int64(src.cut)}; len(src.offsets) != 2 || src.offsets[1] != want[1] {
		t.Fatalf("opened at offsets %v, want %v", src.offsets, want)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}

func TestFillOutlivesItsFirstClient(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	src := newGated(data)
	ctx, cancel := context.WithCancel(t.Context())
	b, err := s.Fill(ctx, d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	pw := <-src.pw
	pw.Write(data[:1000])
	cancel()
	if _, err := io.ReadAll(b); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v", err)
	}
	b.Close()
	pw.Write(data[1000:])
	pw.Close()
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}

func TestOpenSweepsTmpAndReconciles(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	kept, dk := randomBlob(t, 1000)
	gone, dg := randomBlob(t, 1000)
	orphan, do := randomBlob(t, 1000)
	for _, c := range []struct {
		d    digest.Digest
		data []byte
	}{{dk, kept}, {dg, gone}} {
		if err := s.Put(c.d, "application/octet-stream", c.data); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// A crash leaves a temp file, an index entry without its file, and a
	// committed file without its entry.
	os.WriteFile(filepath.Join(root, "tmp", "fill-123"), []byte("partial"), 0o644)
	os.Remove(filepath.Join(root, "blobs", "sha256", dg.Encoded()[:2], dg.Encoded()))
	op := filepath.Join(root, "blobs", "sha256", do.Encoded()[:2], do.Encoded())
	os.MkdirAll(filepath.Dir(op), 0o755)
	os.WriteFile(op, orphan, 0o444)
	s, err = Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	assertTmpEmpty(t, s)
	if _, err := s.Info(dg); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry without file: %v", err)
	}
	if info, err := s.Info(do); err != nil || info.Size != 1000 {
		t.Fatalf("file without entry: %+v %v", info, err)
	}
	if _, err := s.Info(dk); err != nil {
		t.Fatal(err)
	}
}

func TestPutRefusesWrongBytes(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 100)
	if err := s.Put(d, "x", append(data, 1)); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("put: %v", err)
	}
	if s.Has(d) {
		t.Fatal("stored")
	}
	assertTmpEmpty(t, s)
}

// blamedSource serves bad bytes and records the blame it gets.
type blamedSource struct {
	data   []byte
	blamed chan error
}

type blamedBody struct {
	io.Reader
	src *blamedSource
}

func (b blamedBody) Close() error    { return nil }
func (b blamedBody) Blame(err error) { b.src.blamed <- err }

func (b *blamedSource) open(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
	return blamedBody{bytes.NewReader(b.data[offset:]), b}, int64(len(b.data)), "peer", nil
}

func TestFillBlamesTheSourceOfWrongBytes(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 100<<10)
	data[5] ^= 1
	src := &blamedSource{data: data, blamed: make(chan error, 4)}
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readAll(t, b); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("read: %v", err)
	}
	select {
	case err := <-src.blamed:
		if !errors.Is(err, oci.ErrDigestMismatch) {
			t.Fatalf("blamed with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the source of wrong bytes was not blamed")
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("stored")
	}
}

// The last byte waits for the digest, not for the commit: readers end
// cleanly while the fsync is under way, nothing is visible in blobs/ until
// the commit, and Has answers once it is done.
func TestFillReadersEndBeforeTheCommit(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	syncing, release := make(chan struct{}), make(chan struct{})
	s.beforeSync = func() {
		close(syncing)
		<-release
	}
	b, src := fillFed(t, s, d, data)
	got := make(chan error, 1)
	go func() {
		all, err := readAll(t, b)
		if err == nil && !bytes.Equal(all, data) {
			err = errors.New("different bytes")
		}
		got <- err
	}()
	<-syncing
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("the reader's last byte waited for the commit")
	}
	if _, err := os.Stat(s.BlobPath(d)); err == nil {
		t.Fatal("the blob is in place before its fsync")
	}
	// Open serves the verified file at once (a hit), before the link.
	vf, size, err := s.Open(d)
	if err != nil {
		t.Fatalf("open during the commit: %v", err)
	}
	all, err := io.ReadAll(vf)
	vf.Close()
	if err != nil || size != int64(len(data)) || !bytes.Equal(all, data) {
		t.Fatalf("open during the commit: size %d, %v", size, err)
	}
	// A reader arriving now joins the fill and reads every byte.
	late, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	if all, err := readAll(t, late); err != nil || !bytes.Equal(all, data) {
		t.Fatalf("late reader: %v", err)
	}
	has := make(chan bool, 1)
	go func() { has <- s.Has(d) }()
	select {
	case <-has:
		t.Fatal("Has answered before the commit ended")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if !<-has {
		t.Fatal("Has after the commit: false")
	}
	assertStored(t, s, d, data)
	if n := src.opens.Load(); n != 1 {
		t.Fatalf("source opened %d times", n)
	}
}

// WaitFills returns once every fill under way has ended (stored here), and
// with ctx's error while one still runs; it leaves that fill alone.
func TestWaitFillsUntilTheLastFillEnds(t *testing.T) {
	s := openStore(t)
	if err := s.WaitFills(t.Context()); err != nil {
		t.Fatalf("no fills: %v", err)
	}
	data, d := randomBlob(t, 1<<20)
	src := newGated(data)
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	pw := <-src.pw
	pw.Write(data[:1000])
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.WaitFills(ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("a fill under way, ctx ended: %v, want context.Canceled", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.WaitFills(t.Context()) }()
	pw.Write(data[1000:])
	pw.Close()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("WaitFills did not return after the fill ended")
	}
	assertStored(t, s, d, data) // stored before WaitFills returned
}
