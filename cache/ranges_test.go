package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// rangeSource serves a blob's ranges. By default each open streams its
// range at once; a range listed in gates streams through a pipe the test
// feeds instead, and a range in cuts breaks its first stream after that
// many bytes. It records every open and the bytes it sent, and the
// streams' blames.
type rangeSource struct {
	data   []byte
	parts  int
	noSize bool // First fails
	first  int  // First sends this many bytes; 0 means 100,000
	firsts int  // First calls
	bad    int  // with bad > 0, range bad-1's bytes are flipped

	mu     sync.Mutex
	gates  map[int64]chan *io.PipeWriter // range start -> the pipes of its opens
	cuts   map[int64]int64               // range start -> cut its first stream after this many bytes
	fail   map[int64]bool                // range start -> every open fails
	opens  []string                      // "offset-end" per open
	sent   int64
	blamed []string
}

func (r *rangeSource) First(context.Context) (io.ReadCloser, int64, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.firsts++
	if r.noSize {
		return nil, 0, "", errors.New("no first bytes here")
	}
	n := r.first
	if n == 0 {
		n = 100_000
	}
	n = min(n, len(r.data))
	r.sent += int64(n)
	return &blamed{r: bytes.NewReader(r.data[:n]), src: r, name: "first"}, int64(len(r.data)), "first", nil
}

func (r *rangeSource) Split(size int64) []Range {
	var out []Range
	for i := range r.parts {
		out = append(out, Range{size * int64(i) / int64(r.parts), size * int64(i+1) / int64(r.parts)})
	}
	return out
}

func (r *rangeSource) start(offset int64) int64 {
	for _, rg := range r.Split(int64(len(r.data))) {
		if rg.Start <= offset && offset < rg.End {
			return rg.Start
		}
	}
	return -1
}

func (r *rangeSource) OpenRange(_ context.Context, size, offset, end int64) (io.ReadCloser, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if size != int64(len(r.data)) {
		return nil, "", fmt.Errorf("asked with size %d", size)
	}
	r.opens = append(r.opens, fmt.Sprintf("%d-%d", offset, end))
	st := r.start(offset)
	if r.fail[st] {
		return nil, "", fmt.Errorf("range %d: %w", st, oci.ErrUnavailable)
	}
	data := r.data[offset:end]
	if r.bad > 0 && st == r.Split(size)[r.bad-1].Start {
		data = bytes.Clone(data)
		data[0] ^= 0xff
	}
	name := fmt.Sprintf("range-%d", st)
	if c, ok := r.cuts[st]; ok {
		delete(r.cuts, st)
		r.sent += c
		return &blamed{r: io.MultiReader(bytes.NewReader(data[:c]), errReader{io.ErrUnexpectedEOF}), src: r, name: name}, name, nil
	}
	if g, ok := r.gates[st]; ok {
		pr, pw := io.Pipe()
		g <- pw
		r.sent += int64(len(data))
		return &blamed{r: pr, src: r, name: name}, name, nil
	}
	r.sent += int64(len(data))
	return &blamed{r: bytes.NewReader(data), src: r, name: name}, name, nil
}

type blamed struct {
	r    io.Reader
	src  *rangeSource
	name string
}

func (b *blamed) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *blamed) Close() error {
	if c, ok := b.r.(io.Closer); ok {
		c.Close()
	}
	return nil
}
func (b *blamed) Blame(error) {
	b.src.mu.Lock()
	defer b.src.mu.Unlock()
	b.src.blamed = append(b.src.blamed, b.name)
}

// noOpener fails: a range fill that needs it is a test failure the test
// sees as the fill's error.
func noOpener(context.Context, int64) (io.ReadCloser, int64, string, error) {
	return nil, 0, "", errors.New("the one-stream opener was called")
}

// TestRangeFillServesPresentRangesOutOfOrder: a blob fetched as four
// ranges at once, the first held back. A reader of the last range gets
// all of it but the blob's last byte before the first range has a byte;
// the last byte comes only with the commit, after the whole digest
// checks. Each byte was fetched once.
func TestRangeFillServesPresentRangesOutOfOrder(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 4<<20+13)
	src := &rangeSource{data: data, parts: 4, gates: map[int64]chan *io.PipeWriter{0: make(chan *io.PipeWriter, 1)}}
	first, err := s.Fill(t.Context(), d, FillMeta{Ranges: src}, noOpener)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	last := src.Split(int64(len(data)))[3]

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a reader that waits for the first range fails
	defer cancel()
	tail, err := s.Fill(ctx, d, FillMeta{Ranges: src}, noOpener)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tail.Seek(last.Start, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, last.End-last.Start-1)
	if _, err := io.ReadFull(tail, got); err != nil || !bytes.Equal(got, data[last.Start:last.End-1]) {
		t.Fatalf("last range before the first: %v", err)
	}
	// The last byte waits for the commit, which waits for the first range.
	lastByte := make(chan error, 1)
	go func() {
		b := make([]byte, 2)
		n, err := io.ReadFull(tail, b)
		if err == io.ErrUnexpectedEOF && n == 1 && b[0] == data[len(data)-1] {
			err = nil
		}
		lastByte <- err
	}()
	select {
	case err := <-lastByte:
		t.Fatalf("the blob's last byte came before the blob was whole (%v)", err)
	case <-time.After(100 * time.Millisecond): // nothing to wait on: the byte must not come
	}
	// A relay peer, which hashes what it gets and holds its own last byte,
	// takes this one as soon as it landed, before the blob is whole.
	early, err := s.Fill(ctx, d, FillMeta{Ranges: src}, noOpener)
	if err != nil {
		t.Fatal(err)
	}
	early.ServeUnverified()
	if _, err := early.Seek(last.Start, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, last.End-last.Start)
	if _, err := io.ReadFull(early, got); err != nil || !bytes.Equal(got, data[last.Start:last.End]) {
		t.Fatalf("a relay reader's last range with its last byte before the blob was whole: %v", err)
	}
	early.Close()
	pw := <-src.gates[0]
	go func() { pw.Write(data[100_000 : len(data)/4]); pw.Close() }() // after the first stream's bytes
	if err := <-lastByte; err != nil {
		t.Fatalf("last byte: %v", err)
	}
	whole, err := io.ReadAll(first)
	if err != nil || !bytes.Equal(whole, data) {
		t.Fatalf("whole read: %v", err)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
	if src.sent != int64(len(data)) || len(src.opens) != 4 {
		t.Fatalf("sources sent %d bytes in %d opens %v, want %d in 4", src.sent, len(src.opens), src.opens, len(data))
	}
}

// TestRangeFillResumesARangeAtTheByteReached: a range whose stream breaks
// is asked again from the byte it reached, and only that range.
func TestRangeFillResumesARangeAtTheByteReached(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 3<<20)
	second := int64(1 << 20)
	src := &rangeSource{data: data, parts: 3, cuts: map[int64]int64{second: 300_001}}
	fillReadStored(t, s, d, data, FillMeta{Ranges: src}, noOpener)
	want := fmt.Sprintf("%d-%d", second+300_001, 2<<20)
	if len(src.opens) != 4 || src.opens[3] != want {
		t.Fatalf("opens %v, want the fourth at %s", src.opens, want)
	}
	if src.sent != int64(len(data)) {
		t.Fatalf("sources sent %d bytes, want %d", src.sent, len(data))
	}
}

// TestRangeFillWrongBytesStoreNothingAndBlameTheRanges: one range's bytes
// are wrong. Nothing is stored, every reader fails (none gets a clean
// end), and the range streams are blamed.
func TestRangeFillWrongBytesStoreNothingAndBlameTheRanges(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 2<<20)
	src := &rangeSource{data: data, parts: 4, bad: 3}
	b, err := s.Fill(t.Context(), d, FillMeta{Ranges: src}, noOpener)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if !errors.Is(err, oci.ErrDigestMismatch) || len(got) == len(data) {
		t.Fatalf("reader ended with %v after %d bytes, want a digest mismatch", err, len(got))
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("wrong bytes were stored")
	}
	assertTmpEmpty(t, s)
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.blamed) != 5 {
		t.Fatalf("blamed %v, want the first stream and the four range streams", src.blamed)
	}
}

// TestRangeFillGoesOnInOneStream: a range whose sources all fail stops
// the range fill; the one-stream opener takes over at the end of the
// contiguous prefix, and the blob is whole and stored.
func TestRangeFillGoesOnInOneStream(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 2<<20)
	src := &rangeSource{data: data, parts: 2, fail: map[int64]bool{1 << 20: true}}
	var offsets []int64
	var mu sync.Mutex
	open := func(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		mu.Lock()
		defer mu.Unlock()
		offsets = append(offsets, offset)
		return io.NopCloser(bytes.NewReader(data[offset:])), int64(len(data)), "one", nil
	}
	fillReadStored(t, s, d, data, FillMeta{Ranges: src}, open)
	mu.Lock()
	defer mu.Unlock()
	if len(offsets) != 1 || offsets[0] != 1<<20 {
		t.Fatalf("one stream opened at %v, want [%d] (the first range was whole)", offsets, 1<<20)
	}
}

// TestRangeFillSmallBlobIsTheFirstStream: a blob no larger than the first
// stream's bytes is whole after it; no range is asked for.
func TestRangeFillSmallBlobIsTheFirstStream(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 64<<10)
	src := &rangeSource{data: data, parts: 4}
	b, err := s.Fill(t.Context(), d, FillMeta{Ranges: src}, noOpener)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || !bytes.Equal(got, data) || len(src.opens) != 0 || src.firsts != 1 {
		t.Fatalf("read: %v; range opens %v, first streams %d", err, src.opens, src.firsts)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}

// TestRangeFillWithoutSizeIsOneStream: no first bytes, no ranges.
func TestRangeFillWithoutSizeIsOneStream(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	src := &rangeSource{data: data, parts: 4, noSize: true}
	b, err := s.Fill(t.Context(), d, FillMeta{Ranges: src}, func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		return io.NopCloser(bytes.NewReader(data)), int64(len(data)), "one", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || !bytes.Equal(got, data) || len(src.opens) != 0 {
		t.Fatalf("read: %v; range opens %v", err, src.opens)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}

// fillReadStored fills d from meta and open, reads the whole blob as a client
// does and checks it against data, then checks the store holds it.
func fillReadStored(t *testing.T, s *Store, d digest.Digest, data []byte, meta FillMeta, open Opener) {
	t.Helper()
	b, err := s.Fill(t.Context(), d, meta, open)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %v", err)
	}
	waitNoFills(t, s)
	assertStored(t, s, d, data)
}
