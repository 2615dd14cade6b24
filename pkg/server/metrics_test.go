package server_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/version"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// samples is one scrape of /metrics: `name{k="v",...}` → value, labels
// sorted; a histogram gives name_count and name_sum.
type samples map[string]float64

// scrape reads /metrics once the request counters have settled: a handler
// counts its request after the client has read the last byte, so a scrape
// right after a pull can miss the last count. Two equal reads 20ms apart
// (within 5s) mean every handler has counted.
func scrape(t *testing.T, baseURL string) samples {
	t.Helper()
	prev := scrapeOnce(t, baseURL)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond) // polling: no channel says a handler ended
		cur := scrapeOnce(t, baseURL)
		if cur.sum("berth_http_requests_total") == prev.sum("berth_http_requests_total") &&
			cur.sum("berth_served_bytes_total") == prev.sum("berth_served_bytes_total") {
			return cur
		}
		prev = cur
	}
	return prev
}

func scrapeOnce(t *testing.T, baseURL string) samples {
	t.Helper()
	resp, err := http.Get(baseURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := samples{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			slices.Sort(ls)
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[strings.Replace(key, "{", "_count{", 1)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// sum adds the series of name whose labels include every one of match.
func (s samples) sum(name string, match ...string) float64 {
	total := 0.0
	for k, v := range s {
		if !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(k, m)
		}
		if ok {
			total += v
		}
	}
	return total
}

// delta is one expected change: series name with labels match moves by want.
type delta struct {
	name  string
	match []string
	want  float64
}

func d(name string, want float64, match ...string) delta { return delta{name, match, want} }

// checkDeltas compares every series named in want between two scrapes.
func checkDeltas(t *testing.T, step string, before, after samples, want ...delta) {
	t.Helper()
	for _, w := range want {
		if got := after.sum(w.name, w.match...) - before.sum(w.name, w.match...); got != w.want {
			t.Errorf("%s: %s%v moved by %v, want %v", step, w.name, w.match, got, w.want)
		}
	}
}

// imageBlobs returns the config and layer digests of img and their total size.
func imageBlobs(t *testing.T, img v1.Image) (blobs []string, size float64) {
	t.Helper()
	cfgName, _ := img.ConfigName()
	raw, _ := img.RawConfigFile()
	blobs, size = []string{cfgName.String()}, float64(len(raw))
	layers, _ := img.Layers()
	for _, l := range layers {
		dg, _ := l.Digest()
		n, _ := l.Size()
		blobs, size = append(blobs, dg.String()), size+float64(n)
	}
	return blobs, size
}

func lbl(k, v string) string { return fmt.Sprintf("%s=%q", k, v) }

func TestMetricsCountPullsExactly(t *testing.T) {
	up := upstreamtest.New(t)
	imgs := map[string]v1.Image{}
	for _, repo := range []string{"a/one", "a/two", "a/three"} {
		img, err := random.Image(256<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		up.Push(t, repo, "v1", img)
		imgs[repo] = img
	}
	n := startNode(t, up, func(c *config.Config) {
		c.Metrics.TopRepos = 2
		c.Prefetch.Enabled = false // the client's own misses and hits, exactly: a prefetch would race them (prefetch_test.go counts it)
		c.TagTTL = config.Duration(time.Hour)
		c.Registries[0].FailBackoff = config.Duration(50 * time.Millisecond) // the outage below opens the endpoint's circuit
	})
	reg := lbl("registry", up.Host)
	blobs, size := imageBlobs(t, imgs["a/one"])
	pullAll := func() {
		t.Helper()
		resp, body := get(t, http.MethodGet, n.URL+"/v2/a/one/manifests/v1", "Accept", manifestAccept)
		if resp.StatusCode != 200 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		for _, b := range blobs {
			if resp, body := get(t, http.MethodGet, n.URL+"/v2/a/one/blobs/"+b); resp.StatusCode != 200 || sha(body) != b {
				t.Fatalf("blob %s: %d", b, resp.StatusCode)
			}
		}
	}
	upBefore, s0 := up.Total(), scrape(t, n.AdminURL)

	pullAll()       // cold: everything from upstream
	n.WaitStored(t) // a client has a blob's last byte once it checks; the commit (fsync, link) follows
	s1 := scrape(t, n.AdminURL)
	nb := float64(len(blobs))
	checkDeltas(t, "cold pull", s0, s1,
		d("berth_http_requests_total", 1, lbl("route", "manifest"), lbl("method", "GET"), lbl("code", "200")),
		d("berth_http_requests_total", nb, lbl("route", "blob"), lbl("method", "GET"), lbl("code", "200")),
		d("berth_http_requests_total", nb+1),
		d("berth_cache_misses_total", 1, lbl("kind", "tag")),
		d("berth_cache_misses_total", nb, lbl("kind", "blob")),
		d("berth_cache_hits_total", 0),
		d("berth_fetched_bytes_total", size, lbl("source", "upstream")),
		d("berth_fetched_bytes_total", size),
		d("berth_served_bytes_total", size, lbl("source", "upstream")),
		d("berth_served_bytes_total", size),
		d("berth_fills_deduplicated_total", 0),
		d("berth_fills_failed_total", 0),
		d("berth_upstream_errors_total", 0),
		d("berth_pulls_total", 1, reg, lbl("repository", "a/one")),
		d("berth_upstream_request_seconds_count", float64(up.Total()-upBefore)),
		d("berth_upstream_request_seconds_count", 1, lbl("op", "manifest_get")),
		d("berth_upstream_request_seconds_count", nb, lbl("op", "blob")),
	)
	if got := s1.sum("berth_fills_in_flight"); got != 0 {
		t.Errorf("fills in flight after the pull: %v", got)
	}

	upBefore = up.Total()
	pullAll() // warm: everything local, nothing upstream
	get(t, http.MethodHead, n.URL+"/v2/a/one/manifests/v1", "Accept", manifestAccept)
	s2 := scrape(t, n.AdminURL)
	if up.Total() != upBefore {
		t.Fatalf("warm pull reached the upstream %d times", up.Total()-upBefore)
	}
	checkDeltas(t, "warm pull", s1, s2,
		d("berth_http_requests_total", 1, lbl("route", "manifest"), lbl("method", "HEAD"), lbl("code", "200")),
		d("berth_cache_hits_total", 2, lbl("kind", "tag")),
		d("berth_cache_hits_total", 1, lbl("kind", "manifest")),
		d("berth_cache_hits_total", nb, lbl("kind", "blob")),
		d("berth_cache_misses_total", 0),
		d("berth_served_bytes_total", size, lbl("source", "local")),
		d("berth_served_bytes_total", size),
		d("berth_fetched_bytes_total", 0),
		d("berth_pulls_total", 1, reg, lbl("repository", "a/one")), // HEAD is no pull
		d("berth_upstream_request_seconds_count", 0),
	)

	// Pulls per repository are bounded, and the series go to the most
	// pulled: a/three, pulled more than a/two, takes a/two's series.
	for _, repo := range []string{"a/two", "a/three", "a/three", "a/three"} {
		if resp, _ := get(t, http.MethodGet, n.URL+"/v2/"+repo+"/manifests/v1", "Accept", manifestAccept); resp.StatusCode != 200 {
			t.Fatalf("%s: %d", repo, resp.StatusCode)
		}
	}
	s3 := scrape(t, n.AdminURL)
	checkDeltas(t, "top-N pulls", s2, s3,
		d("berth_pulls_total", 2, reg, lbl("repository", "a/three")), // since it got its series
		d("berth_pulls_total", 1, reg, lbl("repository", "other")),   // a/three's first
		d("berth_pulls_total", 0, reg, lbl("repository", "a/one")),
	)
	if got := s3.sum("berth_pulls_total", reg, lbl("repository", "a/two")); got != 0 {
		t.Errorf("a/two kept its series (%v) though a/three was pulled more", got)
	}

	// Upstream errors by kind: a missing tag is "notfound"; an outage
	// counts one "5xx" per 503 the upstream gave.
	upstreamErrors(t, n, up, s3, imgs["a/two"])

	// Concurrent cold clients: one fill, the others join it.
	dedup(t, n, up, imgs["a/three"])
}

func upstreamErrors(t *testing.T, n *node, up *upstreamtest.Registry, before samples, img v1.Image) {
	t.Helper()
	reg := lbl("registry", up.Host)
	if resp, _ := get(t, http.MethodGet, n.URL+"/v2/a/two/manifests/nope", "Accept", manifestAccept); resp.StatusCode != 404 {
		t.Fatalf("missing tag: %d", resp.StatusCode)
	}
	blobs, _ := imageBlobs(t, img)
	path := "/v2/a/two/blobs/" + blobs[1]
	up.SetDown(true)
	resp, _ := get(t, http.MethodGet, n.URL+path)
	up.SetDown(false)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("blob during outage: %d", resp.StatusCode)
	}
	down := float64(up.Count(http.MethodGet, path))
	if down < 1 {
		t.Fatal("the outage saw no blob request")
	}
	after := scrape(t, n.AdminURL)
	checkDeltas(t, "upstream errors", before, after,
		d("berth_upstream_errors_total", 1, reg, lbl("kind", "notfound")),
		d("berth_upstream_errors_total", down, reg, lbl("kind", "5xx")),
		d("berth_upstream_errors_total", 1+down),
		d("berth_http_requests_total", 1, lbl("route", "manifest"), lbl("code", "404")),
		d("berth_http_requests_total", 1, lbl("route", "blob"), lbl("code", "503")),
		d("berth_fills_failed_total", 1),
		d("berth_fetched_bytes_total", 0),
		d("berth_served_bytes_total", 0),
	)
	// The outage opened the endpoint's circuit: wait until a probe closes
	// it (a tag the upstream lacks answers 404 again, not 503). Each try
	// names a tag never asked before: the upstream client remembers a 404
	// (NotFoundTTL), so "nope" would answer 404 from memory with the
	// circuit still open, and a cold client would then find it open.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		resp, _ := get(t, http.MethodHead, n.URL+fmt.Sprintf("/v2/a/two/manifests/nope-%d", i))
		if resp.StatusCode == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint not probed healthy after the outage: %d", resp.StatusCode)
		}
		time.Sleep(20 * time.Millisecond) // the probe runs in the background
	}
}

func dedup(t *testing.T, n *node, up *upstreamtest.Registry, img v1.Image) {
	t.Helper()
	layers, _ := img.Layers()
	dg, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	url := n.URL + "/v2/a/three/blobs/" + dg.String()
	before := scrape(t, n.AdminURL)
	release := up.Gate()
	t.Cleanup(release)
	const clients = 4
	var wg sync.WaitGroup
	started, errs := make(chan struct{}, clients), make(chan error, clients)
	for range clients {
		wg.Go(func() {
			resp, err := http.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				errs <- fmt.Errorf("a cold client joining the fill: %d %s", resp.StatusCode, body)
				return
			}
			h := sha256.New()
			if _, err := io.CopyN(h, resp.Body, 1); err != nil {
				errs <- err
				return
			}
			started <- struct{}{}
			if _, err := io.Copy(h, resp.Body); err != nil {
				errs <- err
			} else if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dg.String() {
				errs <- fmt.Errorf("got %s", got)
			}
		})
	}
	for range clients { // every client has joined the fill before it ends
		select {
		case <-started:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("a client got no byte while the upstream held the body")
		}
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := up.BlobGETs("a/three", dg.String()); got != 1 {
		t.Fatalf("upstream blob GETs %d, want 1", got)
	}
	after := scrape(t, n.AdminURL)
	checkDeltas(t, "dedup", before, after,
		d("berth_fills_deduplicated_total", clients-1),
		d("berth_cache_misses_total", clients, lbl("kind", "blob")),
		d("berth_fetched_bytes_total", float64(size), lbl("source", "upstream")),
		d("berth_served_bytes_total", float64(clients*size), lbl("source", "upstream")),
		d("berth_http_requests_total", clients, lbl("route", "blob"), lbl("code", "200")),
	)
}

func TestMetricsStaleTagDuringOutage(t *testing.T) {
	up := upstreamtest.New(t)
	img, _ := random.Image(1<<10, 1)
	up.Push(t, "lib/app", "stable", img)
	n := startNode(t, up, func(c *config.Config) { c.TagTTL = config.Duration(time.Millisecond) })
	url := n.URL + "/v2/lib/app/manifests/stable"
	if resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept); resp.StatusCode != 200 {
		t.Fatalf("manifest: %d", resp.StatusCode)
	}
	before := scrape(t, n.AdminURL)
	up.SetDown(true)
	time.Sleep(5 * time.Millisecond) // let the 1ms TTL pass
	if resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept); resp.StatusCode != 200 {
		t.Fatalf("stale manifest: %d", resp.StatusCode)
	}
	checkDeltas(t, "stale", before, scrape(t, n.AdminURL),
		d("berth_stale_served_total", 1, lbl("kind", "tag")),
		d("berth_cache_misses_total", 1, lbl("kind", "tag")),
		d("berth_cache_hits_total", 1, lbl("kind", "manifest")),
	)
}

// berth_build_info names the running binary as version.Get does.
func TestMetricsBuildInfo(t *testing.T) {
	up := upstreamtest.New(t)
	n := startNode(t, up)
	v := version.Get()
	s := scrapeOnce(t, n.AdminURL)
	if got := s.sum("berth_build_info", lbl("version", v.Version), lbl("revision", v.Revision), lbl("goversion", v.GoVersion)); got != 1 {
		t.Errorf("berth_build_info{version=%q,revision=%q,goversion=%q} = %v, want 1", v.Version, v.Revision, v.GoVersion, got)
	}
}

// After a real pull: hits and misses carry the registry, request durations
// are observed per route, and /readyz and berth_last_mirror_timestamp_seconds
// say when a client last got content (a peer's request does not count).
func TestMetricsPerRegistryAndLastMirror(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(64<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "team/app", "v1", img)
	n := startNode(t, up, func(c *config.Config) {
		c.Prefetch.Enabled = false // the client's own misses and hits, exactly: a prefetch would race them (prefetch_test.go counts it)
	})
	readyz := func() string {
		t.Helper()
		resp, body := get(t, http.MethodGet, n.URL+"/readyz")
		if resp.StatusCode != 200 {
			t.Fatalf("/readyz %d %s", resp.StatusCode, body)
		}
		return string(body)
	}
	if got := readyz(); !strings.Contains(got, "last successful mirror: never") {
		t.Errorf("/readyz before any pull: %q", got)
	}
	before := time.Now()
	blobs, _ := imageBlobs(t, img)
	for range 2 { // a miss, then a hit
		if resp, body := get(t, http.MethodGet, n.URL+"/v2/team/app/manifests/v1", "Accept", manifestAccept); resp.StatusCode != 200 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		for _, b := range blobs {
			if resp, body := get(t, http.MethodGet, n.URL+"/v2/team/app/blobs/"+b); resp.StatusCode != 200 || sha(body) != b {
				t.Fatalf("blob %s: %d", b, resp.StatusCode)
			}
		}
	}
	if got := readyz(); !strings.Contains(got, "last successful mirror: 20") || !strings.Contains(got, "ago)") {
		t.Errorf("/readyz after a pull: %q", got)
	}
	s := scrape(t, n.AdminURL)
	reg := lbl("registry", up.Host)
	if got := s.sum("berth_cache_hits_total", lbl("kind", "blob"), reg); got != float64(len(blobs)) {
		t.Errorf("blob hits for %s: %v, want %d", up.Host, got, len(blobs))
	}
	if got := s.sum("berth_cache_misses_total", lbl("kind", "blob"), reg); got != float64(len(blobs)) {
		t.Errorf("blob misses for %s: %v, want %d", up.Host, got, len(blobs))
	}
	if got := s["berth_http_request_duration_seconds_count{route=\"blob\"}"]; got != float64(2*len(blobs)) {
		t.Errorf("blob request durations observed: %v, want %d", got, 2*len(blobs))
	}
	if got := s["berth_last_mirror_timestamp_seconds{}"]; got < float64(before.Unix()) {
		t.Errorf("berth_last_mirror_timestamp_seconds %v, want >= %d", got, before.Unix())
	}
}
