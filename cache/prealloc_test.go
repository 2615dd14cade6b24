package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// A source that declares far more than it sends gets at most
// preallocAhead bytes of disk reserved past its last byte, and none once
// its fill fails.
func TestFillPreallocatesBoundedAhead(t *testing.T) {
	s := openStore(t)
	const declared, sent = 1 << 30, 1 << 20
	data, _ := randomBlob(t, sent)
	d := digest.FromString("never sent whole")
	pw := make(chan *io.PipeWriter, 1)
	opened := false
	open := func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		if opened { // a resumed attempt: the source is gone
			return nil, 0, "", fmt.Errorf("source gone: %w", oci.ErrBlobUnknown)
		}
		opened = true
		pr, w := io.Pipe()
		pw <- w
		return pr, declared, "test", nil
	}
	b, err := s.Fill(t.Context(), d, FillMeta{}, open)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w := <-pw
	t.Cleanup(func() { w.CloseWithError(io.ErrUnexpectedEOF) }) // on a failure: the fill ends
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	// The pipe hands the bytes over when the fill reads them; written
	// counts them once they are in the file.
	deadline := time.Now().Add(30 * time.Second)
	for b.f.state().written < sent {
		if time.Now().After(deadline) {
			t.Fatal("bytes not written")
		}
		time.Sleep(time.Millisecond) // polling a state with no channel to wait on
	}
	entries, err := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("tmp/: %d files, %v", len(entries), err)
	}
	fi, err := os.Stat(filepath.Join(s.Root(), "tmp", entries[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
	if fi.Size() != sent {
		t.Fatalf("temp file size %d, want %d (preallocation keeps the size)", fi.Size(), sent)
	}
	if allocated > sent+preallocAhead+1<<20 {
		t.Fatalf("%d bytes allocated for %d written of %d declared: want at most %d ahead", allocated, sent, declared, preallocAhead)
	}
	if canPreallocate(t) && allocated < sent+preallocAhead/2 {
		t.Fatalf("%d bytes allocated for %d written of %d declared: want about %d preallocated ahead", allocated, sent, declared, preallocAhead)
	}
	w.CloseWithError(io.ErrUnexpectedEOF)
	if _, err := io.Copy(io.Discard, b); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("reader of a failed fill ended with %v", err)
	}
	waitNoFills(t, s)
	assertTmpEmpty(t, s)
}

// canPreallocate reports whether the test's file system takes fallocate.
func canPreallocate(t *testing.T) bool {
	f, err := os.CreateTemp(t.TempDir(), "prealloc-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return preallocate(f, 0, 1<<20) == nil
}
