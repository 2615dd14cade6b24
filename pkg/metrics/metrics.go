// Package metrics holds berth's Prometheus collectors. One Metrics value is
// made by cmd/berth and handed to the packages that count; a nil *Metrics is
// valid everywhere and counts nothing, so tests and tools need no registry.
package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Sources of bytes, the values of the "source" label.
const (
	SourceLocal    = "local"
	SourcePeer     = "peer"
	SourceUpstream = "upstream"
)

// Metrics is the set of berth's collectors. Its methods are safe for
// concurrent use and do nothing on a nil receiver.
type Metrics struct {
	Requests         *prometheus.CounterVec   // route, method, code; each of a fixed set
	CacheHits        *prometheus.CounterVec   // kind (blob, manifest, tag), registry
	CacheMisses      *prometheus.CounterVec   // kind, registry
	RequestDuration  *prometheus.HistogramVec // route: client request durations
	FillDuration     *prometheus.HistogramVec // source, result: time a blob fetch took
	FillSize         *prometheus.HistogramVec // source: bytes a stored fetch brought
	GCRuns           *prometheus.CounterVec   // result: background gc runs
	GCBytes          prometheus.Counter       // bytes the gc removed
	LastMirror       prometheus.Gauge         // when a client last got a manifest or blob
	lastMirror       atomic.Int64             // the same, in Unix nanoseconds; 0 means never
	BytesServed      *prometheus.CounterVec   // source: bytes written to clients
	BytesFetched     *prometheus.CounterVec   // source: bytes read from peers and upstreams into the store
	FillsInFlight    prometheus.Gauge         // fetches under way
	FillsDeduped     prometheus.Counter       // callers that joined a fetch under way
	FillsFailed      *prometheus.CounterVec   // reason: digest, source, disk, timeout
	UpstreamErrors   *prometheus.CounterVec   // registry, kind
	UpstreamLatency  *prometheus.HistogramVec // registry, op: time to response headers
	UpstreamBackoffs *prometheus.GaugeVec     // registry, endpoint: the back-off under way
	Evictions        prometheus.Counter       // blobs evicted
	EvictedBytes     prometheus.Counter       // bytes evicted
	EvictionRuns     *prometheus.CounterVec   // stopped: why each eviction run stopped
	StoreBytes       prometheus.Gauge         // bytes in the store
	StoreBlobs       prometheus.Gauge         // blobs in the store
	StoreQuota       prometheus.Gauge         // quota in bytes; 0 means none
	Peers            prometheus.Gauge         // live members besides this node
	Pulls            *prometheus.CounterVec   // registry, repository: manifest pulls, top-N bounded
	StaleServed      *prometheus.CounterVec   // kind: answers from cache because upstream failed
	RelayCopies      prometheus.Gauge         // copies of blobs being served to peers in relay mode now
	RelayServed      prometheus.Counter       // copies served to peers in relay mode
	RelayBusy        prometheus.Counter       // relay requests refused: the blob's copy limit was reached
	RelayPerBlob     prometheus.Histogram     // the most concurrent copies of one blob served, per blob
	RelayFetches     *prometheus.CounterVec   // from (parent, failover, upstream): where this node's blob fetches went
	RelayDepth       prometheus.Histogram     // this node's depth in the relay tree of each blob it fetched
	RelayStripes     *prometheus.CounterVec   // from (parent, failover, upstream): where this node's stripe fetches went
	RelayRanges      prometheus.Counter       // stripe copies (range requests) served to peers in relay mode
	RelayLoops       prometheus.Counter       // relay requests refused for too many relay hops
	FillRanges       prometheus.Histogram     // ranges fetched at once per range fill
	PolicyMoves      *prometheus.CounterVec   // registry: upstream tags found elsewhere than their policy pin
	Prefetches       *prometheus.CounterVec   // result: blobs of cold manifests prefetched for clients

	top *topRepos // which repositories have their own Pulls series

	// The series of the collectors a hit counts, resolved once per label
	// combination (curried.go).
	requests *curried[prometheus.Counter]  // Requests
	duration *curried[prometheus.Observer] // RequestDuration
	hits     *curried[prometheus.Counter]  // CacheHits
	misses   *curried[prometheus.Counter]  // CacheMisses
	pulls    *curried[prometheus.Counter]  // Pulls
	served   *curried[prometheus.Counter]  // BytesServed
}

// New creates the collectors and registers them with reg. topRepos bounds
// the repositories that get their own pull counter: the most pulled ones
// have one, the others count under repository="other".
func New(reg prometheus.Registerer, topRepos int) *Metrics {
	m := &Metrics{
		Requests:         counterVec("berth_http_requests_total", "HTTP requests by route, method and status code.", "route", "method", "code"),
		CacheHits:        counterVec("berth_cache_hits_total", "Requests answered from the local store, by kind and registry.", "kind", "registry"),
		CacheMisses:      counterVec("berth_cache_misses_total", "Requests the local store could not answer, by kind and registry.", "kind", "registry"),
		RequestDuration:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_http_request_duration_seconds", Help: "Client request durations, to the last byte, by route.", Buckets: []float64{.001, .005, .025, .1, .5, 2.5, 10, 60, 300}}, []string{"route"}),
		FillDuration:     prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_fill_duration_seconds", Help: "How long blob fetches into the store took, by source and result (ok, failed).", Buckets: []float64{.01, .05, .25, 1, 5, 15, 60, 300, 1800}}, []string{"source", "result"}),
		FillSize:         prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_fill_size_bytes", Help: "Sizes of the blobs fetched into the store, by source.", Buckets: prometheus.ExponentialBuckets(1024, 8, 9)}, []string{"source"}),
		GCRuns:           counterVec("berth_gc_runs_total", "Background gc runs, by result (ok, failed).", "result"),
		GCBytes:          prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_gc_reclaimed_bytes_total", Help: "Bytes the background gc removed."}),
		LastMirror:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_last_mirror_timestamp_seconds", Help: "When a client last got a manifest or blob through this node (Unix time); 0 means never. A node whose container runtime bypasses berth stays at 0."}),
		BytesServed:      counterVec("berth_served_bytes_total", "Bytes sent to clients, by where they came from.", "source"),
		BytesFetched:     counterVec("berth_fetched_bytes_total", "Bytes fetched into the store, by source.", "source"),
		FillsInFlight:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_fills_in_flight", Help: "Blob fetches under way."}),
		FillsDeduped:     prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_fills_deduplicated_total", Help: "Requests that joined a fetch already under way."}),
		FillsFailed:      counterVec("berth_fills_failed_total", "Blob fetches that stored nothing, by reason.", "reason"),
		UpstreamErrors:   counterVec("berth_upstream_errors_total", "Upstream request errors by registry and kind.", "registry", "kind"),
		UpstreamBackoffs: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "berth_upstream_endpoint_backoff_seconds", Help: "The back-off under way of each upstream endpoint whose circuit opened: failBackoff at first, doubled by each failed probe up to failBackoffMax; 0 once it answers again."}, []string{"registry", "endpoint"}),
		UpstreamLatency:  prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "berth_upstream_request_seconds", Help: "Time to upstream response headers.", Buckets: prometheus.DefBuckets}, []string{"registry", "op"}),
		Evictions:        prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_evictions_total", Help: "Blobs evicted by the quota."}),
		EvictedBytes:     prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_evicted_bytes_total", Help: "Bytes evicted by the quota."}),
		EvictionRuns:     counterVec("berth_eviction_runs_total", "Eviction runs by why they stopped: low_watermark, in_progress (only fills under way are above it), pinned, newest (only the most recently used blob is left).", "stopped"),
		StoreBytes:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_store_bytes", Help: "Bytes of content in the store."}),
		StoreBlobs:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_store_blobs", Help: "Blobs and manifests in the store."}),
		StoreQuota:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_store_quota_bytes", Help: "Store quota in bytes; 0 means none."}),
		Peers:            prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_peers", Help: "Live cluster members besides this node."}),
		Pulls:            counterVec("berth_pulls_total", "Manifest pulls by registry and repository (top repositories; the rest are \"other\").", "registry", "repository"),
		PolicyMoves:      counterVec("berth_policy_tag_moved_total", "Times the upstream's tag pointed elsewhere than its policy pin (config pins); the pinned digest was served.", "registry"),
		StaleServed:      counterVec("berth_stale_served_total", "Answers from the cache because the upstream failed.", "kind"),
		RelayCopies:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "berth_peer_relay_copies", Help: "Copies of blobs this node is serving to peers now (relay mode)."}),
		RelayServed:      prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_peer_relay_copies_total", Help: "Copies of blobs served to peers (relay mode)."}),
		RelayBusy:        prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_peer_relay_busy_total", Help: "Relay requests answered busy: the blob's copy limit (2 x fan-out) was reached."}),
		RelayPerBlob:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_peer_relay_copies_per_blob", Help: "The most copies of one blob served to peers at once, observed when the last ends.", Buckets: []float64{1, 2, 4, 8, 16, 32}}),
		RelayFetches:     counterVec("berth_peer_relay_fetches_total", "Blob fetches down the relay plan, by source: the parent, a failover node, or upstream (the plan's root, or every source failed).", "from"),
		RelayDepth:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_peer_relay_depth", Help: "This node's depth in the relay tree of each blob it fetched (0: the root, fetching from upstream).", Buckets: []float64{0, 1, 2, 3, 4, 5, 6, 8}}),
		RelayStripes:     counterVec("berth_peer_relay_stripe_fetches_total", "Stripe (byte range) fetches of large blobs down the stripe's relay tree, by source: the parent, a failover node, or upstream (the stripe's root, or every source failed). Depth is in berth_peer_relay_depth.", "from"),
		RelayRanges:      prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_peer_relay_stripe_copies_total", Help: "Stripe copies (byte ranges of a blob) served to peers in relay mode; also counted in berth_peer_relay_copies_total."}),
		RelayLoops:       prometheus.NewCounter(prometheus.CounterOpts{Name: "berth_peer_relay_hops_refused_total", Help: "Relay requests refused because they passed more berth nodes than the plan's depth allows (a relay loop)."}),
		FillRanges:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "berth_fill_ranges", Help: "Byte ranges (stripes) fetched at once, per fill of a large blob fetched as stripes.", Buckets: []float64{2, 3, 4, 6, 8, 16, 32, 64}}),
		Prefetches:       counterVec("berth_prefetch_blobs_total", "Blobs (config and layers) of image manifests fetched cold for clients, prefetched before the client asks, by result: fetched, cached (already stored, or being fetched already), failed, dropped (node shutting down).", "result"),
		top:              newTopRepos(topRepos),
	}
	m.requests = counters(3, m.Requests)
	m.duration = newCurried(1, m.RequestDuration.WithLabelValues)
	m.hits = counters(2, m.CacheHits)
	m.misses = counters(2, m.CacheMisses)
	m.pulls = counters(2, m.Pulls)
	m.served = counters(1, m.BytesServed)
	if reg != nil {
		reg.MustRegister(m.RequestDuration, m.FillDuration, m.FillSize, m.GCRuns, m.GCBytes, m.LastMirror)
		reg.MustRegister(m.Requests, m.CacheHits, m.CacheMisses, m.BytesServed, m.BytesFetched,
			m.FillsInFlight, m.FillsDeduped, m.FillsFailed, m.UpstreamErrors, m.UpstreamLatency, m.UpstreamBackoffs,
			m.Evictions, m.EvictedBytes, m.EvictionRuns, m.StoreBytes, m.StoreBlobs, m.StoreQuota, m.Peers, m.Pulls, m.StaleServed,
			m.RelayCopies, m.RelayServed, m.RelayBusy, m.RelayPerBlob, m.RelayFetches, m.RelayDepth, m.PolicyMoves, m.Prefetches,
			m.RelayStripes, m.RelayRanges, m.RelayLoops, m.FillRanges)
	}
	return m
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// Hit counts a request for a configured registry answered from the store.
func (m *Metrics) Hit(kind, registry string) {
	if m != nil {
		m.hits.get(lv{a: kind, b: registry}).Inc()
	}
}

// Miss counts a request for a configured registry the store could not answer.
func (m *Metrics) Miss(kind, registry string) {
	if m != nil {
		m.misses.get(lv{a: kind, b: registry}).Inc()
	}
}

// Mirrored records that a client got a manifest or blob at t.
func (m *Metrics) Mirrored(t time.Time) {
	if m != nil {
		m.lastMirror.Store(t.UnixNano())
		m.LastMirror.Set(float64(t.UnixNano()) / 1e9)
	}
}

// LastMirrored returns when a client last got a manifest or blob; the zero
// time means never.
func (m *Metrics) LastMirrored() time.Time {
	if m == nil || m.lastMirror.Load() == 0 {
		return time.Time{}
	}
	return time.Unix(0, m.lastMirror.Load())
}

// RequestDone observes a client request of route that took d.
func (m *Metrics) RequestDone(route string, d time.Duration) {
	if m != nil {
		m.duration.get(lv{a: route}).Observe(d.Seconds())
	}
}

// FillDone observes a blob fetch from source ("" when none answered) that
// took d and brought n bytes; ok is false when it stored nothing.
func (m *Metrics) FillDone(source string, n int64, d time.Duration, ok bool) {
	if m == nil {
		return
	}
	if source == "" {
		source = "none"
	}
	result := "ok"
	if !ok {
		result = "failed"
	}
	m.FillDuration.WithLabelValues(source, result).Observe(d.Seconds())
	if ok {
		m.FillSize.WithLabelValues(source).Observe(float64(n))
	}
}

// GCDone counts a background gc run that removed n bytes, or failed.
func (m *Metrics) GCDone(n int64, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.GCRuns.WithLabelValues("failed").Inc()
		return
	}
	m.GCRuns.WithLabelValues("ok").Inc()
	m.GCBytes.Add(float64(n))
}

// Served counts n bytes sent to a client from source.
func (m *Metrics) Served(source string, n int64) {
	if m != nil && n > 0 {
		m.served.get(lv{a: source}).Add(float64(n))
	}
}

// Fetched counts n bytes read into the store from source.
func (m *Metrics) Fetched(source string, n int64) {
	if m != nil && n > 0 {
		m.BytesFetched.WithLabelValues(source).Add(float64(n))
	}
}

// FillStarted and FillEnded bracket one blob fetch.
func (m *Metrics) FillStarted() {
	if m != nil {
		m.FillsInFlight.Inc()
	}
}

// FillEnded ends a fetch begun with FillStarted; reason is "" on success.
func (m *Metrics) FillEnded(reason string) {
	if m == nil {
		return
	}
	m.FillsInFlight.Dec()
	if reason != "" {
		m.FillsFailed.WithLabelValues(reason).Inc()
	}
}

// EvictionRun counts one eviction run by why it stopped.
func (m *Metrics) EvictionRun(stopped string) {
	if m != nil {
		m.EvictionRuns.WithLabelValues(stopped).Inc()
	}
}

// Prefetch counts one blob of a prefetch by result.
func (m *Metrics) Prefetch(result string) {
	if m != nil {
		m.Prefetches.WithLabelValues(result).Inc()
	}
}

// Deduped counts a caller that joined a fetch under way.
func (m *Metrics) Deduped() {
	if m != nil {
		m.FillsDeduped.Inc()
	}
}

// UpstreamError counts an upstream failure of a kind (connect, timeout,
// 5xx, 429, auth, notfound, digest).
func (m *Metrics) UpstreamError(registry, kind string) {
	if m != nil {
		m.UpstreamErrors.WithLabelValues(registry, kind).Inc()
	}
}

// UpstreamBackoff sets the back-off under way of a registry's endpoint
// (host[:port]); 0 when it answers again.
func (m *Metrics) UpstreamBackoff(registry, endpoint string, d time.Duration) {
	if m != nil {
		m.UpstreamBackoffs.WithLabelValues(registry, endpoint).Set(d.Seconds())
	}
}

// PolicyTagMoved counts an upstream tag found pointing elsewhere than its
// policy pin.
func (m *Metrics) PolicyTagMoved(registry string) {
	if m != nil {
		m.PolicyMoves.WithLabelValues(registry).Inc()
	}
}

// Stale counts an answer from the cache because the upstream failed.
func (m *Metrics) Stale(kind string) {
	if m != nil {
		m.StaleServed.WithLabelValues(kind).Inc()
	}
}

// Request counts one HTTP request. Only a fixed set of values reaches
// each label: a method outside RFC 9110's list counts as "other", and so
// does a status code net/http has no name for (an upstream's odd status
// passed through), so a client sending random methods cannot add series.
func (m *Metrics) Request(route, method string, code int) {
	if m != nil {
		m.requests.get(lv{route, MethodLabel(method), CodeLabel(code)}).Inc()
	}
}

// MethodLabel is method if it is one of RFC 9110's methods, else "other".
func MethodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	}
	return "other"
}

// CodeLabel is code in decimal if net/http knows its name, else "other".
func CodeLabel(code int) string {
	if code >= 0 && code < len(codeLabels) {
		return codeLabels[code]
	}
	return "other"
}

// codeLabels is CodeLabel of the codes below 600, made once: Itoa
// allocates for each request otherwise.
var codeLabels = func() (t [600]string) {
	for code := range t {
		t[code] = "other"
		if http.StatusText(code) != "" {
			t[code] = strconv.Itoa(code)
		}
	}
	return t
}()

// Pull counts a successful manifest pull of a repository. The topN most
// pulled repositories have their own series; the rest count as "other".
// See topRepos for how "most pulled" is kept in bounded memory.
func (m *Metrics) Pull(registry, repository string) {
	if m == nil {
		return
	}
	own, evicted := m.top.pull(registry + "/" + repository)
	if evicted != "" {
		reg, name, _ := strings.Cut(evicted, "/")
		m.Pulls.DeleteLabelValues(reg, name)
		m.pulls.forget(lv{a: reg, b: name})
	}
	if !own {
		repository = "other"
	}
	m.pulls.get(lv{a: registry, b: repository}).Inc()
}

// RegisterBuildInfo registers berth_build_info, a gauge of 1 whose labels
// name the running binary, as Prometheus conventions have it.
func RegisterBuildInfo(reg prometheus.Registerer, version, revision, goVersion string) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "berth_build_info",
		Help: "Always 1; the labels name the version, source revision and Go toolchain of the running berth.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version, revision, goVersion).Set(1)
	reg.MustRegister(g)
}

// RelayCopy counts a copy served to a peer in relay mode starting (+1) or
// ending (-1).
func (m *Metrics) RelayCopy(delta int) {
	if m == nil {
		return
	}
	m.RelayCopies.Add(float64(delta))
	if delta > 0 {
		m.RelayServed.Inc()
	}
}

// RelayRefused counts a relay request answered busy.
func (m *Metrics) RelayRefused() {
	if m != nil {
		m.RelayBusy.Inc()
	}
}

// RelayCopiesPerBlob records the most copies of one blob served at once.
func (m *Metrics) RelayCopiesPerBlob(n int) {
	if m != nil {
		m.RelayPerBlob.Observe(float64(n))
	}
}

// RelayFetch counts a blob fetch down the relay plan (from parent,
// failover or upstream) by a node at depth in the tree.
func (m *Metrics) RelayFetch(from string, depth int) {
	if m != nil {
		m.RelayFetches.WithLabelValues(from).Inc()
		m.RelayDepth.Observe(float64(depth))
	}
}

// RelayStripe counts a stripe fetch down its relay tree (from parent,
// failover or upstream) by a node at depth in that stripe's tree.
func (m *Metrics) RelayStripe(from string, depth int) {
	if m != nil {
		m.RelayStripes.WithLabelValues(from).Inc()
		m.RelayDepth.Observe(float64(depth))
	}
}

// RelayRange counts a stripe copy (a range request) served in relay mode.
func (m *Metrics) RelayRange() {
	if m != nil {
		m.RelayRanges.Inc()
	}
}

// RelayLoop counts a relay request refused for its hop count.
func (m *Metrics) RelayLoop() {
	if m != nil {
		m.RelayLoops.Inc()
	}
}

// RangeFill records a fill fetching n ranges at once.
func (m *Metrics) RangeFill(n int) {
	if m != nil {
		m.FillRanges.Observe(float64(n))
	}
}
