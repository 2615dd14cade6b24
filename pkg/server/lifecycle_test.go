package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/opencontainers/go-digest"
)

// heldDownload starts a GET of a large blob through srv while the upstream
// holds the body half way, and returns once the client has bytes.
func heldDownload(t *testing.T, up *upstreamtest.Registry, url string) (resp *http.Response, first []byte, release func()) {
	t.Helper()
	release = up.Gate()
	t.Cleanup(release)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	first = make([]byte, 64<<10)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	return resp, first, release
}

// waitRefused polls until addr refuses connections.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after shutdown began")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// oneLayer pushes repo:v1, an image of one random layer of size bytes,
// and returns the layer's digest.
func oneLayer(t *testing.T, up *upstreamtest.Registry, repo string, size int64) string {
	t.Helper()
	_, d, _ := up.PushLayer(t, repo, size)
	return d.String()
}

// running runs srv on a new listener until stop (a SIGTERM) and returns
// its address and Run's result, once it returns.
// returned waits, at most within, for Run (done) to return nil, when says
// by when it should have.
func returned(t *testing.T, done <-chan error, within time.Duration, when string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v, want nil", err)
		}
	case <-time.After(within):
		t.Fatalf("Run did not return %s", when)
	}
}

func running(t *testing.T, srv *server.Server) (addr string, stop context.CancelFunc, done <-chan error) {
	t.Helper()
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln) }()
	return ln.Addr().String(), cancel, ran
}

func TestShutdownLetsADownloadUnderWayFinish(t *testing.T) {
	up := upstreamtest.New(t)
	d := oneLayer(t, up, "big/app", 32<<20)
	srv, err := server.New(testConfig(t, up), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr, stop, done := running(t, srv)

	resp, first, release := heldDownload(t, up, "http://"+addr+"/v2/big/app/blobs/"+d)
	stop() // SIGTERM
	waitRefused(t, addr)
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "shutting down") {
		t.Fatalf("/readyz while draining: %d %q", rec.Code, rec.Body)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) while a response was under way", err)
	default: // the upstream holds the body: the response cannot have ended
	}

	release()
	h := sha256.New()
	h.Write(first)
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("body after shutdown began: %v", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d {
		t.Fatalf("body %s, want %s", got, d)
	}
	returned(t, done, 30*time.Second, "after the last response")
	if !srv.Store().Has(digest.Digest(d)) {
		t.Fatal("the blob downloaded during shutdown was not stored")
	}
}

// A fill no client waits for any more (the client left, or a prefetch)
// gets the grace to finish, as responses do: Run returns once it is
// stored, and the blob survives the Close that follows.
func TestShutdownGivesFillsTheGrace(t *testing.T) {
	up := upstreamtest.New(t)
	d := oneLayer(t, up, "big/app", 8<<20)
	srv, err := server.New(testConfig(t, up), nil) // a 10s grace
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr, stop, done := running(t, srv)

	resp, _, release := heldDownload(t, up, "http://"+addr+"/v2/big/app/blobs/"+d)
	resp.Body.Close() // the client leaves; the fill goes on
	stop()
	waitRefused(t, addr)
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a fill under way, long before its grace", err)
	case <-time.After(200 * time.Millisecond): // the upstream holds the body: the fill cannot have ended
	}
	release()
	returned(t, done, 30*time.Second, "after the fill ended")
	srv.Close() // cancels what still runs: nothing should
	if !srv.Store().Has(digest.Digest(d)) {
		t.Fatal("the blob filled during shutdown was not stored")
	}
}

// After the grace, responses are cut, fills cancelled and their temp files
// removed, Run returns nil (a bounded stop is a clean one) within the
// grace and some slack, the store holds nothing of the blob, and a node
// started on the same store serves it whole.
func TestShutdownCutsResponsesAndFillsAfterTheGrace(t *testing.T) {
	up := upstreamtest.New(t)
	d, d2 := oneLayer(t, up, "big/app", 8<<20), oneLayer(t, up, "big/other", 8<<20)
	cfg := testConfig(t, up)
	const grace = 500 * time.Millisecond
	cfg.ShutdownGrace = config.Duration(grace)
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr, stop, done := running(t, srv)

	base := "http://" + addr + "/v2/"
	resp, _, release := heldDownload(t, up, base+"big/app/blobs/"+d)
	defer release()
	left, _, _ := heldDownload(t, up, base+"big/other/blobs/"+d2)
	left.Body.Close() // a fill no client waits for
	start := time.Now()
	stop()
	returned(t, done, grace+20*time.Second, "within its grace (and slack for a loaded machine)")
	took := time.Since(start)
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("a response cut by the grace ended cleanly")
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if took < grace {
		t.Errorf("Run returned after %s, before the %s grace", took, grace)
	}
	t.Logf("Run returned %s after the stop began (grace %s)", took, grace)
	tmp, _ := os.ReadDir(filepath.Join(cfg.Cache.Dir, "tmp"))
	if len(tmp) > 0 {
		t.Errorf("%d temp files left after the fills were cancelled", len(tmp))
	}
	for _, dg := range []string{d, d2} {
		if srv.Store().Has(digest.Digest(dg)) {
			t.Errorf("the store holds %s, cut half way", dg)
		}
	}

	release()
	again, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln2 := listen(t)
	defer serve(t, again, server.Listeners{HTTP: ln2})()
	for path, dg := range map[string]string{"big/app": d, "big/other": d2} {
		resp, body := get(t, http.MethodGet, "http://"+ln2.Addr().String()+"/v2/"+path+"/blobs/"+dg)
		if resp.StatusCode != 200 || digest.FromBytes(body).String() != dg {
			t.Errorf("after a restart, %s: %d, %d bytes of another digest", dg, resp.StatusCode, len(body))
		}
	}
}

func TestHealthAndReadiness(t *testing.T) {
	up := upstreamtest.New(t)
	srv, err := server.New(testConfig(t, up), nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(path string, want int, body string) {
		t.Helper()
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want || !strings.Contains(rec.Body.String(), body) {
			t.Fatalf("%s: %d %q, want %d %q", path, rec.Code, rec.Body, want, body)
		}
	}
	check("/healthz", 200, "ok")
	check("/readyz", 200, "ready") // alone by choice: no peers configured
	srv.Close()
	check("/healthz", 200, "ok")
	// Not ready: a JSON body a probe's log or an operator's curl can read,
	// naming every reason.
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	var got struct {
		Ready   *bool    `json:"ready"`
		Reasons []string `json:"reasons"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("/readyz when not ready: %d %q: %v, want JSON", rec.Code, rec.Body, err)
	}
	if ct := rec.Header().Get("Content-Type"); rec.Code != 503 || ct != "application/json" {
		t.Errorf("/readyz when not ready: %d %s, want 503 application/json", rec.Code, ct)
	}
	if got.Ready == nil || *got.Ready || !slices.Contains(got.Reasons, "store closed") {
		t.Errorf("/readyz when not ready: %s, want ready false and the reason store closed", rec.Body)
	}
}

func TestReadyOnlyOnceJoined(t *testing.T) {
	up := upstreamtest.New(t)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("the cluster secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	seedGossip := freeAddr(t)
	peerCfg := func(bind string, join ...string) *config.Config {
		cfg := testConfig(t, up)
		cfg.Peers = config.Peers{Bind: bind, Advertise: "127.0.0.1:1", Join: join, SecretFile: secret,
			NodeName: "n-" + bind, Timeout: config.Duration(time.Second), RejoinInterval: config.Duration(100 * time.Millisecond)}
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	a, err := server.New(peerCfg(freeAddr(t), seedGossip), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if code, body := readyz(a); code != 503 || !strings.Contains(body, "peers") {
		t.Fatalf("before the seed is up: %d %q", code, body)
	}
	seed, err := server.New(peerCfg(seedGossip), nil) // alone by choice: no seeds
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	if code, body := readyz(seed); code != 200 {
		t.Fatalf("seed: %d %q", code, body)
	}
	deadline := time.Now().Add(15 * time.Second)
	for code, body := readyz(a); code != 200; code, body = readyz(a) {
		if time.Now().After(deadline) {
			t.Fatalf("never ready after the seed came up: %d %q", code, body)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}

func readyz(srv *server.Server) (int, string) {
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec.Code, rec.Body.String()
}

var freeAddr = proctest.FreeAddr
