package cache_test

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/opencontainers/go-digest"
)

// BenchmarkHitGET serves cache hits of 4 KiB blobs through the whole HTTP
// API (registry handler, mirror, store) over 64 concurrent keep-alive
// connections, with access tracking (access times and audit record) on
// and off. The hit path takes no write lock either way; the figures show
// what tracking costs.
//
//	go test -run '^$' -bench BenchmarkHitGET -benchtime 5s ./cache/
func BenchmarkHitGET(b *testing.B) {
	for _, tracking := range []bool{true, false} {
		b.Run(fmt.Sprintf("tracking=%v", tracking), func(b *testing.B) { benchHits(b, !tracking) })
	}
}

func benchHits(b *testing.B, noTracking bool) {
	s, err := cache.Open(b.TempDir(), cache.Options{NoTracking: noTracking, FlushInterval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var ds []digest.Digest
	for range 256 {
		data := make([]byte, 4096)
		rand.Read(data)
		d := digest.FromBytes(data)
		if err := s.Put(d, "application/octet-stream", data); err != nil {
			b.Fatal(err)
		}
		// The blobs are the repository's (a hit needs that; see cache.Known).
		if err := s.MarkKnown(oci.Repo{Registry: "r.test", Name: "app"}, d); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, d)
	}
	mi := mirror.New(s, mirror.NoPeers{}, nil, mirror.Config{})
	h := registry.New(mi, registry.Options{Router: oci.Router{Known: func(r string) bool { return r == "r.test" }, Default: "r.test"}})
	srv := httptest.NewServer(h)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var next atomic.Uint64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d := ds[next.Add(1)%uint64(len(ds))]
			resp, err := client.Get(srv.URL + "/v2/app/blobs/" + d.String() + "?ns=r.test")
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != 4096 {
				b.Errorf("GET: %s, %d bytes", resp.Status, n)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
}
