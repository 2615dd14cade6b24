package upstream

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
)

// TestBackOffGrowsWithFailedProbesUpToItsCap: the first back-off is
// failBackoff (jitter only lengthens it), each failed probe doubles it
// (±25%) up to failBackoffMax, a request that fails while the endpoint is
// open already does not lengthen it, and an answer starts over.
func TestBackOffGrowsWithFailedProbesUpToItsCap(t *testing.T) {
	t.Parallel()
	const first, limit = time.Second, 8 * time.Second
	for range 20 { // the jitter is random: every draw must keep the bounds
		ep := &endpoint{backoff: newBackOff(first, limit)}
		boom := errors.New("boom")
		opened, d := ep.fail(false, boom)
		if !opened || d < first || d > first*5/4 {
			t.Fatalf("first back-off %s (opened %v), want [1s, 1.25s]", d, opened)
		}
		if opened, again := ep.fail(false, boom); opened || again != d {
			t.Fatalf("a request failing while open: back-off %s -> %s (opened %v), want it kept", d, again, opened)
		}
		for i, nominal := range []time.Duration{2 * time.Second, 4 * time.Second, limit, limit, limit} {
			_, d = ep.fail(true, boom)
			if d < nominal*3/4 || d > min(nominal*5/4, limit) {
				t.Fatalf("back-off after %d failed probes: %s, want %s ±25%%, at most %s", i+1, d, nominal, limit)
			}
		}
		if !ep.recovered() || ep.current != 0 {
			t.Fatalf("recovered: current %s", ep.current)
		}
		if _, d = ep.fail(false, boom); d < first || d > first*5/4 {
			t.Fatalf("back-off after an answer: %s, want to start over at 1s", d)
		}
	}
}

// TestFlatBackOffWhenTheCapIsBelowIt: failBackoffMax at or below
// failBackoff keeps the old flat back-off, exactly.
func TestFlatBackOffWhenTheCapIsBelowIt(t *testing.T) {
	t.Parallel()
	ep := &endpoint{backoff: newBackOff(time.Hour, time.Minute)}
	for i := range 4 {
		if _, d := ep.fail(i > 0, errors.New("boom")); d != time.Hour {
			t.Fatalf("failure %d: back-off %s, want a flat 1h", i, d)
		}
	}
}

// TestBackOffInMetricsAndHealth: an endpoint answering 503 opens with
// failBackoff, shown by berth_upstream_endpoint_backoff_seconds and by
// Health; a probe that finds it answering sets the gauge back to 0.
func TestBackOffInMetricsAndHealth(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	var down atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
			return
		}
		up.front.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, 10)
	// failBackoffMax below failBackoff: a flat hour, so the figures are exact.
	rc := config.Registry{Name: "example.test", Endpoints: []string{front.URL}, FailBackoff: config.Duration(time.Hour), FailBackoffMax: config.Duration(time.Minute)}
	c, err := New([]config.Registry{rc}, Options{Logger: slog.New(slog.DiscardHandler), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	host := front.Listener.Addr().String()
	down.Store(true)
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	if got := gauge(t, m.UpstreamBackoffs.WithLabelValues("example.test", host)); got != 3600 {
		t.Errorf("backoff gauge %v, want 3600", got)
	}
	h := c.Health()
	if len(h) != 1 || h[0].BackoffMax != "1h0m0s" || h[0].Endpoints[0].Backoff != "1h0m0s" || h[0].Endpoints[0].State != StateFailing {
		t.Fatalf("health %+v", h)
	}
	down.Store(false)
	ep := c.regs["example.test"].endpoints[0]
	c.regs["example.test"].probe(ep, make(chan struct{})) // what the first request after the back-off starts
	if got := gauge(t, m.UpstreamBackoffs.WithLabelValues("example.test", host)); got != 0 {
		t.Errorf("backoff gauge after a good probe %v, want 0", got)
	}
	if h := c.Health(); h[0].Endpoints[0].Backoff != "" || h[0].Endpoints[0].State != StateOK {
		t.Errorf("health after a good probe %+v", h[0].Endpoints[0])
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var pb dto.Metric
	if err := g.Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetGauge().GetValue()
}
