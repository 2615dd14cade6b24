package registry_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkManifestHit serves a cached image manifest by tag and by
// digest through the handler, the mirror and the store, with metrics and
// access tracking on, as berth serve runs: the per-request work of a hit
// without the network. The mirror has no upstream: a miss would panic.
//
//	go test -run '^$' -bench BenchmarkManifestHit -benchmem -count 5 ./pkg/registry/
func BenchmarkManifestHit(b *testing.B) {
	s, err := cache.Open(b.TempDir(), cache.Options{FlushInterval: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	repo := oci.Repo{Registry: "r.test", Name: "team/app"}
	man := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6}}
	man.SchemaVersion = 2
	for i := range 4 {
		man.Layers = append(man.Layers, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: digest.FromBytes([]byte{byte(i)}), Size: 1 << 20})
	}
	data, _ := json.Marshal(man)
	d := digest.FromBytes(data)
	if err := s.Put(d, v1.MediaTypeImageManifest, data); err != nil {
		b.Fatal(err)
	}
	if err := s.MarkManifestKnown(repo, d, data); err != nil {
		b.Fatal(err)
	}
	if err := s.SetTag(cache.TagKey(repo.Registry, repo.Name, "v1"), cache.Tag{Digest: d, MediaType: v1.MediaTypeImageManifest, Size: int64(len(data)), Checked: time.Now()}); err != nil {
		b.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry(), 10)
	mi := mirror.New(s, mirror.NoPeers{}, nil, mirror.Config{TagTTL: time.Hour, Metrics: m})
	defer mi.Close()
	h := registry.New(mi, registry.Options{Router: oci.Router{Known: func(r string) bool { return r == "r.test" }, Default: "r.test"}, Metrics: m})
	for _, ref := range []string{"v1", d.String()} {
		name := "tag"
		if ref != "v1" {
			name = "digest"
		}
		b.Run(name, func(b *testing.B) {
			req := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/"+ref, nil)
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				h.ServeHTTP(w, req)
				if w.Code != http.StatusOK || w.Body.Len() != len(data) {
					b.Fatalf("GET %s: %d, %d bytes", ref, w.Code, w.Body.Len())
				}
			}
		})
	}
}
