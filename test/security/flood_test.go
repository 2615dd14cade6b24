package security

// Floods: what many cheap requests can make berth hold. Each case runs the
// berth binary in front of a real distribution registry and asserts the
// answers (status and errcode), that what berth keeps (metric series,
// memory, the audit record, upstream requests, connections) stays bounded,
// and that goroutines, fds and temp files return to their baseline.

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// floodSetup is one berth in front of one real registry holding one image.
type floodSetup struct {
	b     *berth
	up    *upstreamtest.Registry
	img   v1.Image
	layer string // the image's first layer digest
	base  usage
}

func newFloodSetup(t *testing.T, layerSize int64, cfg map[string]any) *floodSetup {
	t.Helper()
	s := &floodSetup{up: upstreamtest.New(t)}
	img, err := random.Image(layerSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	s.img = img
	s.up.Push(t, "real/app", "v1", img)
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	s.layer = ld.String()
	cfg["defaultRegistry"] = s.up.Host
	cfg["registries"] = []any{map[string]any{"name": s.up.Host, "endpoints": []string{s.up.URL}}}
	s.b = startBerth(t, cfg)
	// Warm every path once, so the baseline holds what berth keeps for good.
	if got, body := s.b.floodGet(plain, http.MethodGet, "real/app/manifests/v1"); got != "200 " {
		t.Fatalf("warm-up manifest: %s %.200s", got, body)
	}
	// The config and the layer: each GET joins the blob's prefetch (or
	// starts the fill the prefetch then skips) and returns when it is
	// stored, so no upstream transfer is under way when the upstream's
	// connections are closed below; one cut mid-body would open the
	// upstream's circuit and fail the floods' requests with 503.
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{cfgName.String(), s.layer} {
		if got, _ := s.b.floodGet(plain, http.MethodGet, "real/app/blobs/"+d); got != "200 " {
			t.Fatalf("warm-up blob %s: %s", d, got)
		}
	}
	s.b.floodGet(plain, http.MethodGet, "real/app/blobs/sha256:"+strings.Repeat("1", 64))
	s.up.CloseClientConnections()
	s.b.settle(t, usage{Goroutines: 1 << 20, FDs: 1 << 20}, s.up.CloseClientConnections)
	s.base = s.b.usage(t)
	return s
}

// flood runs fn(i) for i in [0, n) on workers goroutines.
func flood(n, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// keepAlive is a client for floods: connections are reused, as a real
// attacker would, and closed at the end so berth can settle.
func keepAlive(t *testing.T) *http.Client {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: time.Minute}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// errcodeOf returns the first errcode of a body, or "".
var errcodeOf = proctest.ErrCode

// TestFloodRandomMethods: 5,000 requests with random method names each get
// 405 UNSUPPORTED, and add no series to berth_http_requests_total (the
// method label takes "other"), nor much memory.
func TestFloodRandomMethods(t *testing.T) {
	t.Parallel()
	s := newFloodSetup(t, 4<<10, map[string]any{})
	before := s.b.scrape(t)
	n0, _ := series(before, "berth_http_requests_total")
	_, rss0 := series(before, "process_resident_memory_bytes")
	cl := keepAlive(t)
	var mu sync.Mutex
	wrong := map[string]int{}
	flood(5000, 8, func(i int) {
		method := fmt.Sprintf("M%08X", rand.Uint32())
		req, _ := http.NewRequest(method, s.b.URL+"/v2/real/app/manifests/v1", nil)
		resp, err := cl.Do(req)
		if err != nil {
			mu.Lock()
			wrong[err.Error()]++
			mu.Unlock()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := fmt.Sprint(resp.StatusCode, " ", errcodeOf(body)); got != "405 UNSUPPORTED" {
			mu.Lock()
			wrong[got]++
			mu.Unlock()
		}
	})
	if len(wrong) > 0 {
		t.Errorf("answers other than 405 UNSUPPORTED: %v", wrong)
	}
	cl.CloseIdleConnections()
	after := s.b.scrape(t)
	n1, total := series(after, "berth_http_requests_total")
	_, rss1 := series(after, "process_resident_memory_bytes")
	if n1 > n0+2 {
		t.Errorf("5000 random methods made %d request series (from %d): the method label takes client values", n1, n0)
	}
	if total < 5000 {
		t.Errorf("berth_http_requests_total sums %v, want the 5000 requests counted", total)
	}
	if grown := (rss1 - rss0) / (1 << 20); grown > 48 {
		t.Errorf("RSS grew by %.0f MiB over the flood", grown)
	}
	t.Logf("series %d → %d, RSS %.0f → %.0f MiB", n0, n1, rss0/(1<<20), rss1/(1<<20))
	s.b.settle(t, s.base, s.up.CloseClientConnections)
}

// TestFloodJunkRepoNames: thousands of made-up repository names, asking
// for tags that do not exist and for a layer the store holds under another
// repository (both 404), leave the audit record and the index bounded, and
// the most pulled repository keeps its place in the audit record and its
// own pull series.
func TestFloodJunkRepoNames(t *testing.T) {
	t.Parallel()
	s := newFloodSetup(t, 4<<10, map[string]any{
		"cache":   map[string]any{"auditMaxRepos": 50},
		"metrics": map[string]any{"topRepos": 5},
	})
	for range 20 { // the real repository: pulled often
		if got, _ := s.b.floodGet(plain, http.MethodGet, "real/app/manifests/v1"); got != "200 " {
			t.Fatalf("real pull: %s", got)
		}
	}
	cl := keepAlive(t)
	var mu sync.Mutex
	wrong := map[string]int{}
	const names = 3000
	flood(names, 8, func(i int) {
		name := fmt.Sprintf("junk/n%d", i)
		path, want := name+"/manifests/latest", "404 MANIFEST_UNKNOWN"
		if i%2 == 1 { // stored, but not known to be this name's: asked upstream, which has no such repository
			path, want = name+"/blobs/"+s.layer, "404 BLOB_UNKNOWN"
		}
		resp, err := cl.Get(s.b.URL + "/v2/" + path)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = fmt.Sprint(resp.StatusCode, " ", errcodeOf(body))
		}
		if got != want {
			mu.Lock()
			wrong[want+" ≠ "+got]++
			mu.Unlock()
		}
	})
	if len(wrong) > 0 {
		t.Errorf("unexpected answers: %v", wrong)
	}
	cl.CloseIdleConnections()
	resp, err := plain.Get(s.b.AdminURL + "/debug/audit")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var audit []struct {
		Registry, Name string
		Pulls          int64
	}
	if err := json.Unmarshal(body, &audit); err != nil {
		t.Fatalf("audit: %v %.200s", err, body)
	}
	if len(audit) > 50 || len(body) > 64<<10 {
		t.Errorf("audit record after %d junk names: %d repositories, %d bytes (bound 50 repositories)", names, len(audit), len(body))
	}
	kept := false
	for _, r := range audit {
		kept = kept || r.Name == "real/app"
	}
	if !kept {
		t.Errorf("the most pulled repository was dropped from the audit record")
	}
	lines := s.b.scrape(t)
	if n, _ := series(lines, "berth_pulls_total"); n > 5+1 {
		t.Errorf("%d pull series, bound 5 and other", n)
	}
	if n, _ := series(lines, `berth_pulls_total{registry="`+s.up.Host+`",repository="real/app"}`); n != 1 {
		t.Errorf("the most pulled repository has no pull series of its own")
	}
	if fi, err := os.Stat(filepath.Join(s.b.CacheDir, "index.db")); err != nil || fi.Size() > 4<<20 {
		t.Errorf("index.db after the flood: %v bytes, %v", fi.Size(), err)
	}
	s.b.settle(t, s.base, s.up.CloseClientConnections)
}

// TestFloodUnknownDigests: 2,000 requests for 10 digests the upstream does
// not have each get 404 BLOB_UNKNOWN, reach the upstream a bounded number
// of times (fetches.notFoundTTL), and store nothing.
func TestFloodUnknownDigests(t *testing.T) {
	t.Parallel()
	s := newFloodSetup(t, 4<<10, map[string]any{"fetches": map[string]any{"notFoundTTL": "1h"}})
	var digests []string
	for i := range 10 {
		digests = append(digests, fmt.Sprintf("sha256:%064x", 0xdead0000+i))
	}
	cl := keepAlive(t)
	var mu sync.Mutex
	wrong := map[string]int{}
	flood(2000, 16, func(i int) {
		d := digests[i%len(digests)]
		path := "real/app/blobs/" + d
		if i%4 == 3 {
			path = "real/app/manifests/" + d
		}
		resp, err := cl.Get(s.b.URL + "/v2/" + path)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got = fmt.Sprint(resp.StatusCode, " ", errcodeOf(body))
		}
		if want := map[bool]string{true: "404 MANIFEST_UNKNOWN", false: "404 BLOB_UNKNOWN"}[i%4 == 3]; got != want {
			mu.Lock()
			wrong[want+" ≠ "+got]++
			mu.Unlock()
		}
	})
	if len(wrong) > 0 {
		t.Errorf("unexpected answers: %v", wrong)
	}
	cl.CloseIdleConnections()
	total := 0
	for _, d := range digests {
		n := s.up.Count(http.MethodGet, "/v2/real/app/blobs/"+d) + s.up.Count(http.MethodGet, "/v2/real/app/manifests/"+d)
		// One question per digest and kind; a few more where concurrent
		// requests asked before the first answer came back.
		if n > 2*4 {
			t.Errorf("digest %s: %d upstream requests for 200 client requests", d, n)
		}
		total += n
	}
	t.Logf("2000 requests for 10 unknown digests: %d upstream requests", total)
	for _, d := range digests {
		if s.b.blobFiles(t)[digest.Digest(d)] {
			t.Errorf("the store holds %s", d)
		}
	}
	s.b.settle(t, s.base, s.up.CloseClientConnections)
}

// TestSlowReadersReleaseConnections: 50 clients ask for a 64 MiB blob and
// never read it. berth holds at most listen.maxConns connections for them,
// cuts each after listen.writeTimeout without progress, and its fds and
// goroutines return to the baseline; a client reading normally afterwards
// still gets the whole blob (resuming with Range, as containerd does, should
// the loaded machine starve it past the writeTimeout).
func TestSlowReadersReleaseConnections(t *testing.T) {
	t.Parallel()
	s := newFloodSetup(t, 64<<20, map[string]any{"listen": map[string]any{"maxConns": 30, "writeTimeout": "2s"}})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 50 {
		c, err := net.Dial("tcp", s.b.Addr)
		if err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).SetReadBuffer(16 << 10)
		fmt.Fprintf(c, "GET /v2/real/app/blobs/%s HTTP/1.1\r\nHost: berth\r\n\r\n", s.layer)
		conns = append(conns, c)
	}
	peak := 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		peak = max(peak, s.b.usage(t).FDs)
	}
	// Each connection being served holds two fds: its socket and the blob.
	if peak > s.base.FDs+2*30+8 {
		t.Errorf("50 stalled clients held %d fds (baseline %d, maxConns 30: at most 2 each)", peak, s.base.FDs)
	}
	t.Logf("50 stalled clients: at most %d fds (baseline %d)", peak, s.base.FDs)
	// The stalled clients' connections are cut one batch after another;
	// the test's side stays open, so berth's release is its own doing.
	s.b.settle(t, s.base, s.up.CloseClientConnections)
	if t.Failed() {
		return
	}
	body := s.b.getResuming(t, "real/app/blobs/"+s.layer, 64<<20)
	if got := digest.FromBytes(body).String(); got != s.layer {
		t.Fatalf("blob bytes digest %s, want %s", got, s.layer)
	}
}

// getResuming reads /v2/<path> (size bytes) as containerd does: a read
// that is cut goes on with Range from the byte it reached. A test client
// the loaded machine leaves unscheduled for longer than a short
// writeTimeout is cut like a stalled one; every attempt must bring bytes,
// and there are at most 5.
func (b *berth) getResuming(t *testing.T, path string, size int) []byte {
	t.Helper()
	var body []byte
	for attempt := 1; len(body) < size; attempt++ {
		if attempt > 5 {
			t.Fatalf("a reading client after the stall: %d of %d bytes after 5 attempts", len(body), size)
		}
		req, err := http.NewRequest(http.MethodGet, b.URL+"/v2/"+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := http.StatusOK
		if len(body) > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", len(body)))
			want = http.StatusPartialContent
		}
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatalf("a reading client after the stall, attempt %d: %v", attempt, err)
		}
		part, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || len(part) == 0 {
			t.Fatalf("a reading client after the stall, attempt %d at byte %d: %d, %d bytes (%v)", attempt, len(body), resp.StatusCode, len(part), rerr)
		}
		if rerr != nil {
			t.Logf("attempt %d cut at byte %d: %v", attempt, len(body)+len(part), rerr)
		}
		body = append(body, part...)
	}
	return body
}
