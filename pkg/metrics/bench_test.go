package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkManifestHitCounts counts what one manifest hit counts: the
// request, its duration, the cache hit and the pull.
//
//	go test -run '^$' -bench BenchmarkManifestHitCounts -benchmem ./pkg/metrics/
func BenchmarkManifestHitCounts(b *testing.B) {
	m := New(prometheus.NewRegistry(), 10)
	b.ReportAllocs()
	for b.Loop() {
		m.Request("manifest", "GET", 200)
		m.RequestDone("manifest", time.Millisecond)
		m.Hit("manifest", "registry.example")
		m.Pull("registry.example", "team/app")
	}
}
