package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"sync"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/opencontainers/go-digest"
)

// BenchmarkColdFill fills a 1 MiB blob from an in-memory source while 8
// readers stream it as it lands (the cold path: every Read is of a fill
// under way). Each round fills a new blob.
//
//	go test -run '^$' -bench BenchmarkColdFill -benchtime 2s ./cache/
func BenchmarkColdFill(b *testing.B) {
	const size, readers = 1 << 20, 8
	data := make([]byte, size)
	rand.Read(data)
	s, err := cache.Open(b.TempDir(), cache.Options{NoTracking: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	open := func(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		return io.NopCloser(bytes.NewReader(data[offset:])), size, "bench", nil
	}
	b.SetBytes(size * readers)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		binary.LittleEndian.PutUint64(data, uint64(i))
		d := digest.FromBytes(data)
		b.StartTimer()
		var wg sync.WaitGroup
		for range readers {
			blob, err := s.Fill(context.Background(), d, cache.FillMeta{}, open)
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer blob.Close()
				if n, err := io.Copy(io.Discard, blob); err != nil || n != size {
					b.Errorf("read %d bytes: %v", n, err)
				}
			}()
		}
		wg.Wait()
	}
}

// BenchmarkColdFillLarge fills a 64 MiB blob from an in-memory source
// while one reader streams it as it lands: the fill's own pipeline
// (receive, write, hash) bounds it. Each round fills a new blob.
//
//	go test -run '^$' -bench BenchmarkColdFillLarge -count 5 ./cache/
func BenchmarkColdFillLarge(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	rand.Read(data)
	s, err := cache.Open(b.TempDir(), cache.Options{NoTracking: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	open := func(_ context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		return io.NopCloser(bytes.NewReader(data[offset:])), size, "bench", nil
	}
	buf := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		binary.LittleEndian.PutUint64(data, uint64(i))
		d := digest.FromBytes(data)
		b.StartTimer()
		blob, err := s.Fill(context.Background(), d, cache.FillMeta{}, open)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, blob, buf)
		blob.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
	}
}
