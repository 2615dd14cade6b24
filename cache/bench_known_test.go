package cache

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkKnownSize is the index read a blob miss makes for the size its
// manifest gave (FillMeta.Size), on a store knowing 10,000 pairs, from as
// many goroutines as GOMAXPROCS. BenchmarkJoinInFlight is the cheapest miss
// there is, a reader joining a fill under way, for scale.
//
//	go test -run '^$' -bench 'BenchmarkKnownSize|BenchmarkJoinInFlight' -count 5 ./cache/
func BenchmarkKnownSize(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	repo := oci.Repo{Registry: "r.test", Name: "team/app"}
	ds := make([]digest.Digest, 10_000)
	err = s.db.Update(func(tx *bolt.Tx) error {
		for i := range ds {
			ds[i] = digest.FromString(fmt.Sprint(i))
			v := binary.BigEndian.AppendUint64(nil, uint64(i+1))
			if err := tx.Bucket(bucketKnown).Put([]byte(knownKey(repo, ds[i])), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if n := s.KnownSize(repo, ds[i%len(ds)]); n != int64(i%len(ds)+1) {
				b.Errorf("KnownSize %d, want %d", n, i%len(ds)+1)
				return
			}
			i++
		}
	})
}

func BenchmarkJoinInFlight(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	data := []byte("a blob whose bytes never come")
	src := newGated(data)
	d := digest.FromBytes(data)
	first, err := s.Fill(b.Context(), d, FillMeta{}, src.open)
	if err != nil {
		b.Fatal(err)
	}
	pw := <-src.pw
	defer func() { pw.Write(data); pw.Close(); first.Close() }()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := s.Fill(b.Context(), d, FillMeta{}, src.open)
			if err != nil {
				b.Error(err)
				return
			}
			r.Close()
		}
	})
}
