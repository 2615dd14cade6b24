package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// diskFull fails every write that would take a temp file past limit bytes
// with ENOSPC, while full is set.
type diskFull struct {
	limit int64
	full  atomic.Bool
	fails atomic.Int32
}

func (df *diskFull) writeAt(f *os.File, p []byte, off int64) (int, error) {
	if df.full.Load() && off+int64(len(p)) > df.limit {
		df.fails.Add(1)
		n, _ := f.WriteAt(p[:max(0, df.limit-off)], off) // a short write, then the error
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.WriteAt(p, off)
}

// readConcurrently starts n readers of d and returns their results.
func readConcurrently(t *testing.T, s *Store, n int, open Opener, data []byte) <-chan error {
	t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	// No byte flows before every reader has joined, or a fast source could
	// pass through so far that the last ones can no longer join.
	joined := make(chan struct{})
	gated := func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		<-joined
		return open(ctx, offset)
	}
	defer close(joined)
	for range n {
		b, err := s.Fill(t.Context(), digestOf(data), FillMeta{}, gated)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := readAllBlob(b)
			if err == nil && !bytes.Equal(got, data) {
				err = errors.New("different bytes")
			}
			errs <- err
		}()
	}
	go func() { wg.Wait(); close(errs) }()
	return errs
}

func readAllBlob(b *Blob) ([]byte, error) {
	defer b.Close()
	return io.ReadAll(b)
}

func TestDiskFullFillPassesThroughToEveryReader(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), 10)
	df := &diskFull{limit: 1 << 20}
	df.full.Store(true)
	// A 1 MiB ring for a 6 MiB blob: the writer must wait for its readers.
	s, err := Open(t.TempDir(), Options{Metrics: m, WriteAt: df.writeAt, PassThroughBuffer: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, d := randomBlob(t, 6<<20)
	src := newGated(data)
	errs := readConcurrently(t, s, 8, src.open, data)
	pw := <-src.pw
	go func() {
		for off := 0; off < len(data); off += 64 << 10 { // in pieces, as a network would
			pw.Write(data[off:min(len(data), off+64<<10)])
		}
		pw.Close()
	}()
	for err := range errs {
		if err != nil {
			t.Fatalf("reader of a fill whose disk filled: %v", err)
		}
	}
	waitNoFills(t, s)
	if df.fails.Load() == 0 {
		t.Fatal("no write failed: the test tested nothing")
	}
	if s.Has(d) {
		t.Fatal("a fill that could not write its file was committed")
	}
	assertTmpEmpty(t, s)
	if n := value(m.FillsFailed.WithLabelValues("disk")); n != 1 {
		t.Fatalf("fills failed for disk: %v", n)
	}
	if used, _ := s.Usage(); used != 0 {
		t.Fatalf("usage %d after a pass-through", used)
	}
	// Space again: the next fill stores the blob.
	df.full.Store(false)
	b, err := s.Fill(t.Context(), d, FillMeta{}, (&breakingSource{data: data, cut: len(data)}).open)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readAllBlob(b); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("refill: %v", err)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}

func TestDiskFullDropsAReaderThatStops(t *testing.T) {
	df := &diskFull{limit: 0}
	df.full.Store(true)
	s, err := Open(t.TempDir(), Options{WriteAt: df.writeAt, PassThroughBuffer: 1 << 20, PassThroughWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, d := randomBlob(t, 3<<20)
	// No byte flows before both readers have joined: on a loaded machine
	// the stuck one could else be dropped, and the ring move past the
	// file, before the second joins.
	joined := make(chan struct{})
	src := &breakingSource{data: data, cut: len(data)}
	gated := func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		<-joined
		return src.open(ctx, offset)
	}
	stuck, err := s.Fill(t.Context(), d, FillMeta{}, gated)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	reader, err := s.Fill(t.Context(), d, FillMeta{}, nil) // joins: the opener is not called again
	close(joined)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAllBlob(reader)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("moving reader: %v", err)
	}
	if _, err := io.ReadAll(stuck); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("reader that stopped: %v, want it dropped", err)
	}
	waitNoFills(t, s)
	assertTmpEmpty(t, s)
}

// TestDiskFullOnTmpfs fills a real 4 MiB file system (root only).
func TestDiskFullOnTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	m := metrics.New(prometheus.NewRegistry(), 10)
	s, err := Open(filepath.Join(dir, "store"), Options{Metrics: m, PassThroughBuffer: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, d := randomBlob(t, 10<<20)
	errs := readConcurrently(t, s, 4, (&breakingSource{data: data, cut: len(data)}).open, data)
	for err := range errs {
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
	}
	waitNoFills(t, s)
	if s.Has(d) || value(m.FillsFailed.WithLabelValues("disk")) != 1 {
		t.Fatal("a 10 MiB blob on a 4 MiB file system did not pass through")
	}
	assertTmpEmpty(t, s)
	small, ds := randomBlob(t, 100<<10) // the disk has room again
	if err := s.Put(ds, "", small); err != nil {
		t.Fatal(err)
	}
}

func digestOf(data []byte) digest.Digest { return digest.FromBytes(data) }
