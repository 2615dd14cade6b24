package cache

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkOpen100k measures start-up (sweep, reconcile, counters) on a
// store of 100,000 small indexed blobs, as a restart after a crash finds
// it. The store is written directly (files and one index transaction)
// to keep the set-up short.
//
//	go test -run '^$' -bench BenchmarkOpen100k -benchtime 5x ./cache/
func BenchmarkOpen100k(b *testing.B) {
	root := b.TempDir()
	makeStore(b, root, 100_000)
	b.ResetTimer()
	for range b.N {
		s, err := Open(root, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, n := s.Usage(); n != 100_000 {
			b.Fatalf("%d blobs", n)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

func makeStore(b *testing.B, root string, n int) {
	b.Helper()
	db, err := openIndex(filepath.Join(mustMkdir(b, root), "index.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	err = db.Update(func(tx *bolt.Tx) error {
		for i := range n {
			data := []byte{byte(i), byte(i >> 8), byte(i >> 16), 'x'}
			d := digest.FromBytes(data)
			p := filepath.Join(root, "blobs", "sha256", d.Encoded()[:2], d.Encoded())
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, data, 0o444); err != nil {
				return err
			}
			v, _ := json.Marshal(Info{Size: int64(len(data)), Created: now, Access: now})
			if err := tx.Bucket(bucketBlobs).Put([]byte(d), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func mustMkdir(b *testing.B, root string) string {
	if err := os.MkdirAll(filepath.Join(root, "tmp"), 0o755); err != nil {
		b.Fatal(err)
	}
	return root
}
