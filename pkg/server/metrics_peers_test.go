package server_test

import (
	"net/http"
	"testing"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// startPeerNodes starts two nodes, n0 and n1, that gossip with each other
// and waits until each counts the other in berth_peers.
func startPeerNodes(t *testing.T, up *upstreamtest.Registry) map[string]*node {
	t.Helper()
	nodes := map[string]*node{}
	for _, n := range nodetest.StartCluster(t, up, 2, nil) {
		nodes[n.Name] = n
	}
	return nodes
}

func TestMetricsCountPeerBytes(t *testing.T) {
	up := upstreamtest.New(t)
	_, dg, size := up.PushLayer(t, "p/app", 512<<10)
	nodes := startPeerNodes(t, up)
	rank := peer.Rank(dg.String(), []string{"n0", "n1"})
	owner, asker := nodes[rank[0]], nodes[rank[1]]
	so, sa := scrape(t, owner.AdminURL), scrape(t, asker.AdminURL)

	resp, body := get(t, http.MethodGet, asker.URL+"/v2/p/app/blobs/"+dg.String())
	if resp.StatusCode != 200 || sha(body) != dg.String() {
		t.Fatalf("blob through the asker: %d %s", resp.StatusCode, sha(body))
	}
	if got := up.BlobGETs("p/app", dg.String()); got != 1 {
		t.Fatalf("upstream blob GETs %d, want 1", got)
	}
	s := float64(size)
	checkDeltas(t, "asker", sa, scrape(t, asker.AdminURL),
		d("berth_cache_misses_total", 1, lbl("kind", "blob")),
		d("berth_fetched_bytes_total", s, lbl("source", "peer")),
		d("berth_fetched_bytes_total", s),
		d("berth_served_bytes_total", s, lbl("source", "peer")),
		d("berth_served_bytes_total", s),
		d("berth_http_requests_total", 1, lbl("route", "blob"), lbl("code", "200")),
		d("berth_upstream_request_seconds_count", 0),
	)
	// No manifest gave the asker the size, so (striping on) it asks its
	// parent for the first stripe's worth of bytes with a Range: a 206 of
	// the whole small blob.
	checkDeltas(t, "owner", so, scrape(t, owner.AdminURL),
		d("berth_cache_misses_total", 1, lbl("kind", "blob")),
		d("berth_fetched_bytes_total", s, lbl("source", "upstream")),
		d("berth_fetched_bytes_total", s),
		d("berth_served_bytes_total", s, lbl("source", "upstream")),
		d("berth_served_bytes_total", s),
		d("berth_http_requests_total", 1, lbl("route", "blob"), lbl("code", "206")),
		d("berth_upstream_request_seconds_count", 1, lbl("op", "blob")),
	)
	// Now both hold it: the asker answers locally.
	sa = scrape(t, asker.AdminURL)
	if resp, body := get(t, http.MethodGet, asker.URL+"/v2/p/app/blobs/"+dg.String()); resp.StatusCode != 200 || sha(body) != dg.String() {
		t.Fatalf("second GET: %d", resp.StatusCode)
	}
	checkDeltas(t, "asker hit", sa, scrape(t, asker.AdminURL),
		d("berth_served_bytes_total", s, lbl("source", "local")),
		d("berth_fetched_bytes_total", 0),
	)
}
