package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// startRegistry runs distribution's registry binary on a free loopback
// port with filesystem storage in a temp dir, and returns its host:port.
// extra is YAML appended to the config (an auth section). want is the
// status GET /v2/ answers once it is up (200, or 401 with auth).
func startRegistry(t testing.TB, extra string, want int) string {
	t.Helper()
	addr, _ := startRegistryProc(t, extra, want)
	return addr
}

// startRegistryProc is startRegistry that also returns the process, for
// tests that stop the upstream.
func startRegistryProc(t testing.TB, extra string, want int) (string, *proc) {
	t.Helper()
	bin := tool(t, "registry")
	var lastErr error
	for range 3 { // the free port may be taken between pick and bind
		addr := freeAddr(t)
		dir := t.TempDir()
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: e2e-not-a-secret
%s`, filepath.Join(dir, "data"), addr, extra)
		file := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p := startProc(t, "registry", []string{"OTEL_TRACES_EXPORTER=none"}, bin, "serve", file)
		if lastErr = p.ready("http://"+addr+"/v2/", want); lastErr == nil {
			return addr, p
		}
		p.Stop(5 * time.Second)
	}
	t.Fatalf("registry: %v", lastErr)
	return "", nil
}

// countingProxy is a reverse proxy in front of an upstream registry that
// counts what berth asks of it. All methods are safe for concurrent use.
type countingProxy struct {
	Addr  string // host:port berth is pointed at
	close func()

	mu        sync.Mutex
	rp        *httputil.ReverseProxy // to the upstream
	hold      map[string]hold        // digest -> stall its body (Hold)
	firstByte map[string]func()      // digest -> called at the first body byte of each GET
	blobGets  map[string]int         // digest -> GETs answered 200 or 206 (served)
	blobHeads map[string]int         // digest -> HEAD count
	manifests int                    // manifest GETs and HEADs
	auths     int                    // requests carrying an Authorization header
	direct    int                    // manifest and blob requests without X-Berth-Hops: not sent by a berth
	log       []string               // "METHOD path?query -> status", in order
}

// newCountingProxy starts a proxy to target (host:port) on 127.0.0.1:0,
// closed in t.Cleanup.
func newCountingProxy(t testing.TB, target string) *countingProxy {
	t.Helper()
	c := newCountingProxyWith(t, nil)
	c.SetTarget(target)
	return c
}

// newCountingProxyWith starts a proxy whose target is set later
// (SetTarget); requests for /token go to token instead, when not nil, so
// a token realm can share the registry's host:port.
func newCountingProxyWith(t testing.TB, token http.Handler) *countingProxy {
	t.Helper()
	c := &countingProxy{blobGets: map[string]int{}, blobHeads: map[string]int{},
		hold: map[string]hold{}, firstByte: map[string]func(){}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != nil && r.URL.Path == "/token" {
			token.ServeHTTP(w, r)
			return
		}
		kind, ref := pathKind(r.URL.Path)
		c.mu.Lock()
		rp, h, first := c.rp, c.hold[ref], c.firstByte[ref]
		c.mu.Unlock()
		sw := &statusWriter{ResponseWriter: w, status: 200}
		var out http.ResponseWriter = sw
		if kind == "blobs" && r.Method == http.MethodGet {
			if h.release != nil {
				out = &holdWriter{statusWriter: sw, hold: h}
			} else if first != nil {
				out = &firstByteWriter{statusWriter: sw, first: first}
			}
		}
		// Record in a defer: ReverseProxy panics (http.ErrAbortHandler) when
		// a client drops the body midway, as containerd 2.x does.
		defer func() {
			v := recover()
			c.record(r, sw.status, v != nil)
			if v != nil {
				panic(v)
			}
		}()
		rp.ServeHTTP(out, r)
	}))
	t.Cleanup(srv.Close)
	c.Addr = strings.TrimPrefix(srv.URL, "http://")
	c.close = srv.Close
	return c
}

// Close stops the proxy: berth's upstream then refuses connections.
func (c *countingProxy) Close() { c.close() }

// SetTarget points the proxy at an upstream registry (host:port).
func (c *countingProxy) SetTarget(target string) {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1 // stream: every write goes out at once
	c.mu.Lock()
	c.rp = rp
	c.mu.Unlock()
}

func (c *countingProxy) record(r *http.Request, status int, aborted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	line := fmt.Sprintf("%s %s -> %d", r.Method, r.URL.RequestURI(), status)
	if aborted {
		line += " (body cut)"
	}
	if rg := r.Header.Get("Range"); rg != "" {
		line += " (Range: " + rg + ")"
	}
	c.log = append(c.log, line)
	if r.Header.Get("Authorization") != "" {
		c.auths++
	}
	kind, ref := pathKind(r.URL.Path)
	if (kind == "blobs" || kind == "manifests") && r.Header.Get("X-Berth-Hops") == "" {
		c.direct++
	}
	switch {
	case kind == "blobs" && r.Method == http.MethodGet && (status == http.StatusOK || status == http.StatusPartialContent):
		c.blobGets[ref]++
	case kind == "blobs" && r.Method == http.MethodHead:
		c.blobHeads[ref]++
	case kind == "manifests":
		c.manifests++
	}
}

// pathKind splits /v2/<name>/<kind>/<ref> into kind and ref.
func pathKind(p string) (kind, ref string) {
	parts := strings.Split(p, "/")
	if len(parts) < 5 {
		return "", ""
	}
	return parts[len(parts)-2], parts[len(parts)-1]
}

// BlobGets returns a copy of the served blob GET counts by digest.
func (c *countingProxy) BlobGets() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.blobGets))
	for k, v := range c.blobGets {
		m[k] = v
	}
	return m
}

// Manifests returns how many manifest requests reached the upstream.
func (c *countingProxy) Manifests() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.manifests
}

// Direct returns how many manifest and blob requests came without berth's
// X-Berth-Hops header: from a client that bypassed berth.
func (c *countingProxy) Direct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.direct
}

// Auths returns how many requests carried an Authorization header.
func (c *countingProxy) Auths() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.auths
}

// Log returns the requests seen so far, one line each.
func (c *countingProxy) Log() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.log, "\n")
}

// assertBlobsOnce checks that each digest in want was served exactly
// once and no blob more than once, summed over proxies. (A GET answered
// 401 before a token was fetched is not a blob served.)
func assertBlobsOnce(t testing.TB, want []string, proxies ...*countingProxy) {
	t.Helper()
	assertBlobGets(t, want, 1, proxies...)
}

// assertBlobGets checks that each digest in want was served exactly n
// times and no blob more than n times, summed over proxies.
func assertBlobGets(t testing.TB, want []string, n int, proxies ...*countingProxy) {
	t.Helper()
	total := map[string]int{}
	for _, p := range proxies {
		for d, n := range p.BlobGets() {
			total[d] += n
		}
	}
	var bad []string
	for _, d := range want {
		if total[d] != n {
			bad = append(bad, fmt.Sprintf("%s served %d times, want %d", d, total[d], n))
		}
	}
	for d, got := range total {
		if got > n && !contains(want, d) {
			bad = append(bad, fmt.Sprintf("%s served %d times, want at most %d", d, got, n))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		var logs []string
		for _, p := range proxies {
			logs = append(logs, p.Log())
		}
		t.Errorf("upstream blob GETs:\n%s\nupstream requests:\n%s", strings.Join(bad, "\n"), strings.Join(logs, "\n--\n"))
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// hold stalls a blob's body after its first after bytes until release
// is closed, or until a bound passes (the test then fails on its own
// assertions, not on a hang).
type hold struct {
	after   int64
	release <-chan struct{}
}

// Hold stalls the body of each GET of blob d after its first after bytes
// until release is closed (or 2 minutes pass).
func (c *countingProxy) Hold(d string, after int64, release <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold[d] = hold{after: after, release: release}
}

// OnFirstByte calls f (from the serving goroutine) when a GET of blob d
// first writes body bytes.
func (c *countingProxy) OnFirstByte(d string, f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.firstByte[d] = f
}

type holdWriter struct {
	*statusWriter
	hold    hold
	written int64
	held    bool
}

func (w *holdWriter) Write(p []byte) (int, error) {
	if w.held || w.written+int64(len(p)) <= w.hold.after {
		n, err := w.statusWriter.Write(p)
		w.written += int64(n)
		return n, err
	}
	k := w.hold.after - w.written
	n, err := w.statusWriter.Write(p[:k])
	w.written += int64(n)
	if err != nil {
		return n, err
	}
	w.Flush()
	w.held = true
	select {
	case <-w.hold.release:
	case <-time.After(2 * time.Minute):
	}
	m, err := w.statusWriter.Write(p[k:])
	w.written += int64(m)
	return n + m, err
}

type firstByteWriter struct {
	*statusWriter
	first func()
	seen  bool
}

func (w *firstByteWriter) Write(p []byte) (int, error) {
	if !w.seen && len(p) > 0 {
		w.seen = true
		w.first()
	}
	return w.statusWriter.Write(p)
}
