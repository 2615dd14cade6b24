package cache

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// quotaStore opens a store with a quota of q bytes, low and high
// watermarks of 0.5 and 0.9, and logs in buf.
func quotaStore(t *testing.T, q int64, buf *syncBuffer) (*Store, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(prometheus.NewRegistry(), 10)
	log := slog.New(slog.NewTextHandler(buf, nil))
	s, err := Open(t.TempDir(), Options{MaxBytes: q, HighWatermark: 0.9, LowWatermark: 0.5, Metrics: m, Logger: log, PassThroughBuffer: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// putBlobs commits n random blobs of size bytes each.
func putBlobs(t *testing.T, s *Store, n, size int) []digest.Digest {
	t.Helper()
	var ds []digest.Digest
	for range n {
		data, d := randomBlob(t, size)
		if err := s.Put(d, "", data); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func assertKept(t *testing.T, s *Store, ds []digest.Digest) {
	t.Helper()
	for i, d := range ds {
		if !s.Has(d) {
			t.Errorf("blob %d (%s) was removed", i, d)
		}
		if _, err := s.Info(d); err != nil {
			t.Errorf("blob %d: %v", i, err)
		}
	}
}

// endless is a source with no Content-Length that never ends: it sends
// what the test writes into its pipe.
// Opened again after its stream breaks, it fails.
type endless struct {
	pw     chan *io.PipeWriter
	opened atomic.Bool
}

func (e *endless) open(context.Context, int64) (io.ReadCloser, int64, string, error) {
	if e.opened.Swap(true) {
		return nil, 0, "", errors.New("source gone")
	}
	pr, pw := io.Pipe()
	e.pw <- pw
	return pr, -1, "test", nil
}

func TestEndlessFillUnderQuotaEvictsNothing(t *testing.T) {
	const q = 4 << 20
	var logs syncBuffer
	s, m := quotaStore(t, q, &logs)
	committed := putBlobs(t, s, 2, 768<<10) // under the low watermark

	src := &endless{pw: make(chan *io.PipeWriter, 1)}
	_, d := randomBlob(t, 1) // the digest it claims; it never gets there
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, b); b.Close(); read <- err }()
	pw := <-src.pw
	t.Cleanup(func() { pw.CloseWithError(errors.New("test over")) }) // before the store closes
	chunk := make([]byte, 256<<10)
	// Short of the quota, where a stream of unknown size is cut (limit.go).
	for range q/len(chunk) - 1 {
		rand.Read(chunk)
		if _, err := pw.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// A commit while the fill runs asks for an eviction; so does this call.
	small := putBlobs(t, s, 1, 1000)
	st, err := s.Evict()
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 0 || st.Stopped != StopInProgress {
		t.Fatalf("eviction during an endless fill: %+v, want nothing removed, stopped %q", st, StopInProgress)
	}
	if used, _ := s.Usage(); used > q+2<<20 {
		t.Fatalf("usage %d: the fill's temp file grew past the quota", used)
	}
	// On and on: the fill is cut at the quota, and its temp file goes.
	var werr error
	for i := 0; werr == nil && i < 6*q/len(chunk); i++ {
		_, werr = pw.Write(chunk)
	}
	if werr == nil {
		t.Fatalf("the fill took six times the quota from a stream of unknown size")
	}
	if err := <-read; !errors.Is(err, oci.ErrTooLarge) {
		t.Fatalf("reader of a fill cut at the quota: %v, want ErrTooLarge", err)
	}
	waitNoFills(t, s)
	assertTmpEmpty(t, s)
	assertKept(t, s, append(committed, small...))
	if n := value(m.Evictions); n != 0 {
		t.Fatalf("%v blobs evicted", n)
	}
	// The fill logs its failure after it wakes its readers.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "more than the store quota"); {
		if time.Now().After(deadline) {
			t.Fatalf("log does not say why the fill failed:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond) // polling a log with no channel to wait on
	}
}

func TestOversizedFillPassesThroughAndEvictsNothing(t *testing.T) {
	const q = 4 << 20
	var logs syncBuffer
	s, m := quotaStore(t, q, &logs)
	committed := putBlobs(t, s, 3, 1<<20)
	data, d := randomBlob(t, 6<<20) // larger than the quota
	b, err := s.Fill(t.Context(), d, FillMeta{}, func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		return io.NopCloser(bytes.NewReader(data)), int64(len(data)), "test", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAll(t, b)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reader of an oversized blob: %v, whole %v", err, bytes.Equal(got, data))
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("a blob larger than the quota was stored")
	}
	assertKept(t, s, committed)
	assertTmpEmpty(t, s)
	if n := value(m.Evictions); n != 0 {
		t.Fatalf("%v blobs evicted", n)
	}
	if n := value(m.FillsFailed.WithLabelValues("quota")); n != 1 {
		t.Fatalf("fills passed through for the quota: %v", n)
	}
	if used, n := s.Usage(); used != 3<<20 || n != 3 {
		t.Fatalf("usage %d bytes %d blobs", used, n)
	}
}

func TestNewestBlobAboveLowWatermarkStays(t *testing.T) {
	const q = 1_000_000
	var logs syncBuffer
	s, m := quotaStore(t, q, &logs)
	old := putBlobs(t, s, 3, 100_000)
	big := putBlobs(t, s, 1, 850_000) // fits the quota, not the low watermark
	waitUsageAtMost(t, s, 850_000)
	for _, d := range old {
		if s.Has(d) {
			t.Errorf("older blob %s kept", d)
		}
	}
	assertKept(t, s, big)
	st, err := s.Evict()
	if err != nil || st.Blobs != 0 || st.Stopped != StopNewest {
		t.Fatalf("second eviction: %+v %v", st, err)
	}
	if n := value(m.EvictionRuns.WithLabelValues(StopNewest)); n < 1 { // the background run may not have counted yet
		t.Fatalf("eviction runs stopped at the newest blob: %v", n)
	}
}

// image puts a small image into s: an index of one manifest with a config
// and two layers, a signature (a referrer manifest) and a cosign .sig tag,
// and returns the index and every digest of the image.
func image(t *testing.T, s *Store, registry, name, tag string, layerSize int) (digest.Digest, []digest.Digest) {
	t.Helper()
	l1, l2, cfg := putBlobs(t, s, 1, layerSize)[0], putBlobs(t, s, 1, layerSize)[0], putJSON(t, s, map[string]any{"architecture": "amd64", "os": "linux", "rootfs": tag})
	desc := func(d digest.Digest, mt string) map[string]any {
		info, _ := s.Info(d)
		return map[string]any{"mediaType": mt, "digest": d, "size": info.Size}
	}
	man := putManifest(t, s, map[string]any{"schemaVersion": 2, "mediaType": mtManifest,
		"config": desc(cfg, "application/vnd.oci.image.config.v1+json"),
		"layers": []any{desc(l1, "application/vnd.oci.image.layer.v1.tar"), desc(l2, "application/vnd.oci.image.layer.v1.tar")}})
	index := putManifest(t, s, map[string]any{"schemaVersion": 2, "mediaType": mtIndex,
		"manifests": []any{desc(man, mtManifest)}})
	sigLayer := putJSON(t, s, map[string]any{"signature": string(man)})
	sig := putManifest(t, s, map[string]any{"schemaVersion": 2, "mediaType": mtManifest, "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
		"config": desc(cfg, "application/vnd.oci.empty.v1+json"), "layers": []any{desc(sigLayer, "application/json")}, "subject": desc(man, mtManifest)})
	cosignLayer := putJSON(t, s, map[string]any{"cosign": string(index)})
	cosign := putManifest(t, s, map[string]any{"schemaVersion": 2, "mediaType": mtManifest,
		"config": desc(cfg, "application/vnd.oci.image.config.v1+json"), "layers": []any{desc(cosignLayer, "application/json")}})
	if err := s.SetTag(TagKey(registry, name, tag), Tag{Digest: index, MediaType: mtIndex}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTag(TagKey(registry, name, "sha256-"+index.Encoded()+".sig"), Tag{Digest: cosign, MediaType: mtManifest}); err != nil {
		t.Fatal(err)
	}
	return index, []digest.Digest{index, man, cfg, l1, l2, sig, sigLayer, cosign, cosignLayer}
}

const (
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
)

func putManifest(t *testing.T, s *Store, v map[string]any) digest.Digest {
	t.Helper()
	d := putJSON(t, s, v)
	info, _ := s.Info(d)
	info.MediaType = v["mediaType"].(string)
	if err := s.putInfo(info); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPinnedContentAboveLowWatermarkStopsEvictionCleanly(t *testing.T) {
	const q = 1_000_000
	var logs syncBuffer
	s, m := quotaStore(t, q, &logs)
	index, pinned := image(t, s, "r.example", "app", "v1", 300_000) // 600 kB: above the low watermark
	if _, err := s.AddPin(Pin{Ref: "r.example/app:v1", Tag: TagKey("r.example", "app", "v1"), Digest: index}); err != nil {
		t.Fatal(err)
	}
	// The tag mappings go with the eviction of their manifests; pinned
	// manifests keep theirs.
	unpinned := putBlobs(t, s, 4, 100_000) // 1 MB committed: above the high watermark
	for i := range 3 {                     // the background run may have begun; later runs remove nothing
		st, err := s.Evict()
		if err != nil || (i > 0 && st.Blobs != 0) || st.Stopped != StopPinned {
			t.Fatalf("eviction %d above pinned content: %+v %v", i, st, err)
		}
	}
	assertKept(t, s, pinned)
	for _, key := range []string{TagKey("r.example", "app", "v1"), TagKey("r.example", "app", "sha256-"+index.Encoded()+".sig")} {
		if _, err := s.Tag(key); err != nil {
			t.Errorf("tag %s of pinned content: %v", key, err)
		}
	}
	if !s.Has(unpinned[3]) {
		t.Error("the newest blob was evicted")
	}
	for _, d := range unpinned[:3] {
		if s.Has(d) {
			t.Errorf("unpinned %s kept", d)
		}
	}
	if n := value(m.Evictions); n != 3 {
		t.Fatalf("%v evictions, want 3", n)
	}
	if n := value(m.EvictionRuns.WithLabelValues(StopPinned)); n < 3 {
		t.Fatalf("eviction runs stopped by pins: %v", n)
	}
	if !strings.Contains(logs.String(), "stopped=pinned") {
		t.Fatalf("log does not say why eviction stopped:\n%s", logs.String())
	}

	// Unpinned, the image is content like any other.
	if err := s.Unpin(index); err != nil {
		t.Fatal(err)
	}
	st, err := s.Evict()
	if err != nil || st.Blobs == 0 || st.Stopped != StopLowWatermark {
		t.Fatalf("eviction after unpin: %+v %v", st, err)
	}
}
