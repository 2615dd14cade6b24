package chart

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/pkg/metrics"
)

// berthMetrics returns the name of every collector pkg/metrics registers.
func berthMetrics(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := metrics.New(reg, 10)
	// Touch every vector so Gather lists it.
	m.Requests.WithLabelValues("blob", "GET", "200").Inc()
	for _, v := range []*prometheus.CounterVec{m.BytesServed, m.BytesFetched, m.FillsFailed, m.StaleServed, m.GCRuns, m.RelayFetches, m.Prefetches} {
		v.WithLabelValues("x").Inc()
	}
	metrics.RegisterBuildInfo(reg, "v", "r", "go")
	m.Hit("blob", "r")
	m.Miss("blob", "r")
	m.RequestDone("blob", time.Second)
	m.FillDone("upstream", 1, time.Second, true)
	m.UpstreamErrors.WithLabelValues("r", "k").Inc()
	m.UpstreamLatency.WithLabelValues("r", "op").Observe(1)
	m.Pulls.WithLabelValues("r", "repo").Inc()
	m.RelayFetch("parent", 1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// TestDashboard checks the Grafana dashboard queries only metrics berth
// exports, and shows every one of them.
func TestDashboard(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(chartDir + "/dashboards/berth.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	exported := berthMetrics(t)
	used := map[string]bool{}
	name := regexp.MustCompile(`berth_[a-z_]+`)
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				base := n
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(n, suf); ok && exported[s] {
						base = s
					}
				}
				if !exported[base] {
					t.Errorf("panel %q queries %s, which berth does not export", p.Title, n)
				}
				used[base] = true
			}
		}
	}
	var unused []string
	for n := range exported {
		if strings.HasPrefix(n, "berth_") && !used[n] {
			unused = append(unused, n)
		}
	}
	slices.Sort(unused)
	if len(unused) > 0 {
		t.Errorf("metrics without a dashboard panel: %q", unused)
	}
}
