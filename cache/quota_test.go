package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// blobServer is an HTTP upstream of blobs by digest, with Range support,
// and the opener a fill uses to read from it.
type blobServer struct {
	*httptest.Server
	blobs map[digest.Digest][]byte
}

func newBlobServer(t *testing.T) *blobServer {
	bs := &blobServer{blobs: map[digest.Digest][]byte{}}
	bs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, ok := bs.blobs[digest.Digest(r.URL.Path[1:])]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}))
	t.Cleanup(bs.Close)
	return bs
}

func (bs *blobServer) add(data []byte) digest.Digest {
	d := digest.FromBytes(data)
	bs.blobs[d] = data
	return d
}

func (bs *blobServer) opener(d digest.Digest) Opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, bs.URL+"/"+string(d), nil)
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, 0, "", err
		}
		if resp.StatusCode/100 != 2 {
			resp.Body.Close()
			return nil, 0, "", fmt.Errorf("status %d", resp.StatusCode)
		}
		return resp.Body, int64(len(bs.blobs[d])), "test", nil
	}
}

// fillWhole fills d through the store and checks the bytes a reader gets.
func fillWhole(t *testing.T, s *Store, bs *blobServer, d digest.Digest) {
	t.Helper()
	b, err := s.Fill(t.Context(), d, FillMeta{MediaType: "application/octet-stream"}, bs.opener(d))
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || digest.FromBytes(got) != d {
		t.Fatalf("fill %s: %v", d, err)
	}
	waitNoFills(t, s)
}

func waitUsageAtMost(t *testing.T, s *Store, limit int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		used, _ := s.Usage()
		if used <= limit {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage %d, want at most %d", used, limit)
		}
		time.Sleep(5 * time.Millisecond) // polling a counter; no channel to wait on
	}
}

func TestQuotaEvictsLeastRecentlyUsedBelowLowMark(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry(), 10)
	s, err := Open(t.TempDir(), Options{MaxBytes: 1_000_000, HighWatermark: 0.9, LowWatermark: 0.5, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	bs := newBlobServer(t)
	var ds []digest.Digest
	var data [][]byte
	for i := range 10 {
		b, _ := randomBlob(t, 100_000)
		data = append(data, b)
		ds = append(ds, bs.add(b))
		_ = i
	}
	fillWhole(t, s, bs, ds[0])
	held, _, err := s.Open(ds[0]) // a client still reading b0 when it goes
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, d := range ds[1:9] {
		fillWhole(t, s, bs, d)
	}
	if err := s.Pin(ds[1]); err != nil {
		t.Fatal(err)
	}
	f, _, err := s.Open(ds[2]) // b2 becomes recent
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if n := value(m.Evictions); n != 0 {
		t.Fatalf("%v evictions below the high mark", n)
	}
	fillWhole(t, s, bs, ds[9]) // 1,000,000 bytes: above the high mark
	waitUsageAtMost(t, s, 500_000)

	// Least recently used first: b0, then b3..b6; b1 is pinned.
	for i, d := range ds {
		want := i == 1 || i == 2 || i >= 7
		if s.Has(d) != want {
			t.Errorf("b%d stored: %v, want %v", i, s.Has(d), want)
		}
		if _, err := s.Info(d); (err == nil) != want {
			t.Errorf("b%d indexed: %v, want %v", i, err, want)
		}
	}
	got, err := io.ReadAll(held)
	if err != nil || !bytes.Equal(got, data[0]) {
		t.Fatalf("reader of an evicted blob: %v, whole %v", err, bytes.Equal(got, data[0]))
	}
	if n := value(m.Evictions); n != 5 {
		t.Fatalf("%v evictions, want 5", n)
	}
	if n := value(m.EvictedBytes); n != 500_000 {
		t.Fatalf("%v evicted bytes", n)
	}
	if b, n := value(m.StoreBytes), value(m.StoreBlobs); b != 500_000 || n != 5 {
		t.Fatalf("gauges: %v bytes, %v blobs", b, n)
	}
	if q := value(m.StoreQuota); q != 1_000_000 {
		t.Fatalf("quota gauge %v", q)
	}
	// An evicted blob fills again.
	fillWhole(t, s, bs, ds[0])
}

func TestEvictionDropsTagsBeforeTheirManifest(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBytes: 10_000, LowWatermark: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	man := []byte(`{"schemaVersion":2,"layers":[]}`)
	md := digest.FromBytes(man)
	if err := s.Put(md, "application/vnd.oci.image.manifest.v1+json", man); err != nil {
		t.Fatal(err)
	}
	key := TagKey("r.example", "app", "v1")
	if err := s.SetTag(key, Tag{Digest: md, Size: int64(len(man)), Checked: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		data, d := randomBlob(t, 4000)
		if err := s.Put(d, "", data); err != nil {
			t.Fatal(err)
		}
	}
	waitUsageAtMost(t, s, 5000)
	if s.Has(md) {
		t.Fatal("least recently used manifest kept")
	}
	if _, err := s.Tag(key); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tag of an evicted manifest: %v", err)
	}
}

func TestStartUpCountsUsage(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{10, 200, 3000} {
		data, d := randomBlob(t, n)
		if err := s.Put(d, "", data); err != nil {
			t.Fatal(err)
		}
		if err := s.Put(d, "", data); err != nil { // twice counts once
			t.Fatal(err)
		}
	}
	if b, n := s.Usage(); b != 3210 || n != 3 {
		t.Fatalf("usage %d bytes %d blobs", b, n)
	}
	s.Close()
	s, err = Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if b, n := s.Usage(); b != 3210 || n != 3 {
		t.Fatalf("after restart: usage %d bytes %d blobs", b, n)
	}
}

func TestReconcileRemovesUnindexedBadFiles(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, d := randomBlob(t, 100)
	p := s.BlobPath(d)
	os.MkdirAll(filepath.Dir(p), 0o755)
	os.WriteFile(p, []byte("not the bytes"), 0o444)
	s, err = Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Has(d) {
		t.Fatal("a file that does not hash to its name survived start-up")
	}
	if b, n := s.Usage(); b != 0 || n != 0 {
		t.Fatalf("usage %d %d", b, n)
	}
}

func TestVerifyRemovesBadFiles(t *testing.T) {
	s := openStore(t)
	good, dg := randomBlob(t, 5000)
	bad, db := randomBlob(t, 5000)
	for d, data := range map[digest.Digest][]byte{dg: good, db: bad} {
		if err := s.Put(d, "", data); err != nil {
			t.Fatal(err)
		}
	}
	p := s.BlobPath(db)
	os.Chmod(p, 0o644)
	bad[7] ^= 1
	os.WriteFile(p, bad, 0o444)
	rep, err := s.Verify(t.Context(), 2, false)
	if err != nil || rep.Checked != 2 || len(rep.Bad) != 1 || rep.Bad[0] != db || !s.Has(db) {
		t.Fatalf("dry verify: %+v %v", rep, err)
	}
	rep, err = s.Verify(t.Context(), 2, true)
	if err != nil || len(rep.Bad) != 1 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	if s.Has(db) || !s.Has(dg) {
		t.Fatal("verify removed the wrong file")
	}
	if _, err := s.Info(db); !errors.Is(err, ErrNotFound) {
		t.Fatalf("entry of a bad file: %v", err)
	}
	if b, n := s.Usage(); b != 5000 || n != 1 {
		t.Fatalf("usage %d %d", b, n)
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	c.Write(&m)
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
