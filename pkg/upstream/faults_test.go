package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func TestRedirectNeverCarriesAuthorization(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 3000)
	d, layer := layerOf(t, img)
	withTokenAuth(t, up, "alice", "pw")

	var storageHits, storageAuth atomic.Int64
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageHits.Add(1)
		if r.Header.Get("Authorization") != "" {
			storageAuth.Add(1)
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
	}))
	t.Cleanup(storage.Close)
	up.fault.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") || r.Header.Get("Authorization") == "" {
			return false // the token auth answers 401
		}
		http.Redirect(w, r, storage.URL+"/objects/"+d.Encoded()+"?X-Signature=abc", http.StatusTemporaryRedirect)
		return true
	})

	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Username: "alice", Password: "pw", AllowPrivateRedirects: true})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	for _, off := range []int64{0, 1234} {
		rc, size, err := c.FetchBlob(ctx, repo.Blob(d), off)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		if size != int64(len(layer)) || !bytes.Equal(b, layer[off:]) {
			t.Fatalf("offset %d: size %d, %d bytes", off, size, len(b))
		}
	}
	if storageHits.Load() != 2 || storageAuth.Load() != 0 {
		t.Fatalf("storage saw %d requests, %d with Authorization; want 2, 0", storageHits.Load(), storageAuth.Load())
	}
	authed := 0
	for _, r := range up.fault.requests("/blobs/") {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
			authed++
		}
	}
	if authed != 2 {
		t.Fatalf("registry got %d blob requests with a token, want 2", authed)
	}
}

func TestFailoverRefusedAnd503(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 100)
	raw, _ := img.RawManifest()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	var hits503 atomic.Int64
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits503.Add(1)
		writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
	}))
	t.Cleanup(down.Close)

	c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{refused, down.URL, up.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	for range 3 {
		_, b, err := c.GetManifest(ctx, repo.Manifest("v1"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, raw) {
			t.Fatal("manifest bytes differ")
		}
	}
	if n := hits503.Load(); n != 1 {
		t.Errorf("503 endpoint asked %d times, want 1 (then skipped for the back-off)", n)
	}
	if n := len(up.fault.requests("/manifests/")); n != 3 {
		t.Errorf("good endpoint got %d manifest requests, want 3", n)
	}

	// Every endpoint down: an error wrapping ErrUnavailable.
	all := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{refused, down.URL}})
	if _, err := all.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("all down: %v", err)
	}
}

// cutAfter answers the first blob GET with only half of the body, then
// breaks the connection.
func cutAfter(f *faultHandler, n int64) {
	var cut atomic.Bool
	f.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet || !cut.CompareAndSwap(false, true) {
			return false
		}
		f.blobGets.Add(1)
		f.next.ServeHTTP(&cuttingWriter{ResponseWriter: w, left: n, counted: &f.blobBytes}, r)
		return true
	})
}

// cuttingWriter passes left bytes, then aborts the response.
type cuttingWriter struct {
	http.ResponseWriter
	left    int64
	counted *atomic.Int64
}

func (c *cuttingWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, _ := c.ResponseWriter.Write(p)
	c.left -= int64(n)
	c.counted.Add(int64(n))
	if c.left == 0 {
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	return n, nil
}

func TestResumeAfterCutOnNextEndpoint(t *testing.T) {
	t.Parallel()
	a := newDistUpstream(t)
	img := a.push(t, "team/app", "v1", 1<<20)
	d, layer := layerOf(t, img)
	b := &upstreamReg{handler: a.handler} // a second endpoint of the same registry
	b.start(t)
	cutAfter(a.fault, int64(len(layer)/2))

	c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{a.front.URL, b.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	var got []byte
	for attempt := 0; len(got) < len(layer); attempt++ {
		if attempt > 2 {
			t.Fatalf("no progress after %d attempts", attempt)
		}
		rc, size, err := c.FetchBlob(ctx, repo.Blob(d), int64(len(got)))
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(layer)) {
			t.Fatalf("size %d", size)
		}
		chunk, err := io.ReadAll(rc)
		rc.Close()
		got = append(got, chunk...)
		if err != nil && !errors.Is(err, oci.ErrUnavailable) {
			t.Fatalf("read: %v", err)
		}
	}
	if !bytes.Equal(got, layer) {
		t.Fatal("resumed blob differs")
	}
	served := a.fault.blobBytes.Load() + b.fault.blobBytes.Load()
	if served != int64(len(layer)) || a.fault.blobGets.Load() != 1 || b.fault.blobGets.Load() != 1 {
		t.Fatalf("upstreams served %d bytes in %d+%d GETs, want %d in 1+1", served, a.fault.blobGets.Load(), b.fault.blobGets.Load(), len(layer))
	}
	if r := b.fault.requests("/blobs/"); len(r) != 1 || r[0].Header.Get("Range") != "bytes="+itoa(len(layer)/2)+"-" {
		t.Fatalf("second endpoint requests: %v", r)
	}
}

func TestRateLimitRetryAfter(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	var limited atomic.Int64
	var until atomic.Int64
	up.fault.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		if until.Load() == 0 {
			until.Store(time.Now().Add(time.Second).UnixNano())
		}
		if time.Now().UnixNano() < until.Load() {
			limited.Add(1)
			w.Header().Set("Retry-After", "1")
			writeErr(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "pull rate limit")
			return true
		}
		return false
	})
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			_, err := c.HeadManifest(ctx, repo.Manifest("v1"))
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if total := len(up.fault.requests("/manifests/")); total > 16 || limited.Load() > 8 || limited.Load() == 0 {
		t.Fatalf("%d manifest requests, %d limited: a request storm", total, limited.Load())
	}

	// A Retry-After beyond MaxRetryAfter is not waited: TOOMANYREQUESTS.
	up.fault.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Retry-After", "3600")
		writeErr(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "pull rate limit")
		return true
	})
	c2 := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, MaxRetryAfter: config.Duration(time.Second)})
	start := time.Now()
	_, err := c2.HeadManifest(ctx, repo.Manifest("v1"))
	var ue *Error
	if !errors.Is(err, oci.ErrTooManyRequests) || !errors.As(err, &ue) || ue.Message != "pull rate limit" {
		t.Fatalf("long Retry-After: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("waited %s for a Retry-After it could not honour", time.Since(start))
	}
}

func TestIdleReadTimeoutCutsStalledBody(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 4096)
	d, _ := layerOf(t, img)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up.fault.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		w.Header().Set("Content-Length", "4096")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("some"))
		w.(http.Flusher).Flush()
		select { // stall
		case <-release:
		case <-r.Context().Done():
		}
		return true
	})
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, Timeouts: config.Timeouts{IdleRead: config.Duration(200 * time.Millisecond)}})
	rc, _, err := c.FetchBlob(testCtx(t), repoOf(c, "team/app").Blob(d), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if string(b) != "some" || !errors.Is(err, oci.ErrUnavailable) || !errors.Is(err, errIdleTimeout) {
		t.Fatalf("stalled body: %q, %v", b, err)
	}
}
func itoa(n int) string { return strconv.Itoa(n) }

// An open endpoint is not asked until a probe finds it answering, even
// when it is the registry's only one; the first call after the back-off
// starts the probe and waits for its answer, so a registry that is back
// serves that call instead of failing it.
func TestOpenEndpointWaitsForAProbe(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	var down atomic.Bool
	var asked atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		if down.Load() {
			writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
			return
		}
		up.front.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	const backoff = 200 * time.Millisecond
	c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{front.URL}, FailBackoff: config.Duration(backoff)})
	ctx, repo := testCtx(t), repoOf(c, "team/app")

	down.Store(true)
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	for range 5 { // within the back-off: failed at once, nothing sent
		if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
			t.Fatalf("open endpoint: %v", err)
		}
	}
	if n := asked.Load(); n != 1 {
		t.Fatalf("an open endpoint was asked %d times, want 1", n)
	}
	down.Store(false)
	time.Sleep(backoff * 3 / 2) // past the first back-off and its jitter (±25%)
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); err != nil {
		t.Fatalf("the first call after the back-off, the registry back: %v", err)
	}
}

// A probe of a registry still silent holds the calls that wait for it at
// most probeWait, not the probe's own timeout: they fail with
// ErrUnavailable, and the probe goes on in the background.
func TestSilentProbeHoldsCallsAtMostProbeWait(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	var down, silent atomic.Bool
	release := make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case silent.Load():
			select { // as an upstream that drops packets, until the test ends
			case <-release:
			case <-r.Context().Done():
			}
			return
		case down.Load():
			writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
			return
		}
		up.front.Config.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Cleanup(func() { close(release) })
	const backoff = 200 * time.Millisecond
	rc := config.Registry{Name: "example.test", Endpoints: []string{front.URL}, FailBackoff: config.Duration(backoff)}
	rc.Timeouts.ResponseHeader = config.Duration(time.Minute) // the probe's bound is far longer than probeWait
	c := newClient(t, rc)
	ctx, repo := testCtx(t), repoOf(c, "team/app")

	down.Store(true)
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("503: %v", err)
	}
	silent.Store(true)
	time.Sleep(backoff * 3 / 2)
	start := time.Now()
	if _, err := c.HeadManifest(ctx, repo.Manifest("v1")); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("a call waiting on a silent probe: %v", err)
	}
	if took := time.Since(start); took < probeWait || took > probeWait+5*time.Second {
		t.Fatalf("a call waited %v on a silent probe, want about %v", took, probeWait)
	}
}
