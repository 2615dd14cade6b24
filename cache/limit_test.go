package cache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// endless is a source body without a size that never ends; it counts the
// bytes it handed out.
type endlessBody struct{ read *atomic.Int64 }

func (e endlessBody) Read(p []byte) (int, error) { e.read.Add(int64(len(p))); return len(p), nil }
func (e endlessBody) Close() error               { return nil }

// TestFillCappedAtQuota: a source without a size that never ends is cut at
// the store's quota; nothing is kept and the fill fails with ErrTooLarge.
func TestFillCappedAtQuota(t *testing.T) {
	const quota = 4 << 20
	s, err := Open(t.TempDir(), Options{MaxBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var read atomic.Int64
	d := digest.FromString("an endless blob")
	b, err := s.Fill(t.Context(), d, FillMeta{}, func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		return endlessBody{&read}, -1, "test", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("reader ended with %v after %d bytes, want ErrTooLarge", err, len(got))
	}
	if n := read.Load(); n > quota+1<<20 {
		t.Fatalf("the fill read %d bytes of an endless body, past the %d-byte quota", n, quota)
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("an endless body was stored")
	}
	assertTmpEmpty(t, s)
}

// TestFillCappedAtDescriptorSize: with the size a descriptor names, a
// source that declares more fails at once, and one that sends more
// (declaring nothing) is cut at that size.
func TestFillCappedAtDescriptorSize(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 64<<10)
	for _, declared := range []int64{int64(len(data)) + 1, -1} {
		b, err := s.Fill(t.Context(), d, FillMeta{Size: int64(len(data)) - 1}, func(context.Context, int64) (io.ReadCloser, int64, string, error) {
			return io.NopCloser(&sliceReader{data}), declared, "test", nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readAll(t, b); !errors.Is(err, oci.ErrTooLarge) {
			t.Fatalf("declared %d: %v, want ErrTooLarge", declared, err)
		}
		waitNoFills(t, s)
	}
	if s.Has(d) {
		t.Fatal("a blob over its descriptor's size was stored")
	}
	assertTmpEmpty(t, s)
}

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestJoinerOfAnotherOriginFallsBack: a fill whose source stalls, joined
// by a caller of another origin, goes on from the joiner's source at the
// byte reached, and every reader gets the whole blob.
func TestJoinerOfAnotherOriginFallsBack(t *testing.T) {
	s, err := Open(t.TempDir(), Options{StallAfter: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	data, d := randomBlob(t, 1<<20)
	stalled := func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		pr, pw := io.Pipe()
		go func() {
			pw.Write(data[offset : len(data)/2]) // half, then nothing until the attempt is cut
			<-ctx.Done()
			pw.CloseWithError(context.Cause(ctx))
		}()
		return pr, int64(len(data)), "stalling", nil
	}
	var fromOffset atomic.Int64
	healthy := func(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		fromOffset.Store(offset)
		return io.NopCloser(&sliceReader{data[offset:]}), int64(len(data)), "healthy", nil
	}
	first, err := s.Fill(t.Context(), d, FillMeta{Origin: "slow.example"}, stalled)
	if err != nil {
		t.Fatal(err)
	}
	// Same origin: no fallback lent; another origin: its source is.
	same, err := s.Fill(t.Context(), d, FillMeta{Origin: "slow.example"}, healthy)
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Fill(t.Context(), d, FillMeta{Origin: "healthy.example"}, healthy)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []*Blob{first, same, other} {
		got, err := readAll(t, b)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("reader: %v, %d bytes, want the whole blob", err, len(got))
		}
	}
	if off := fromOffset.Load(); off == 0 {
		t.Error("the fallback started from 0, not from the byte reached")
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}
