package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/upstreamtest"
)

// A cached blob goes out through the whole server, the registry handler
// and every wrapper between it and the socket (the status writer, the
// write-progress writer, the connection limit), in one blocking sendfile:
// a whole GET and a Range of at least blockingMin (containerd 2 fetches a
// layer as 8 MiB ranges), while a small range takes Go's own path. A
// wrapper that hid ReadFrom would turn every hit into a copy through user
// space that no response shows, only the hit benchmark; this test counts
// the sends instead of timing them.
func TestCachedBlobHitTakesTheBlockingSend(t *testing.T) {
	up := upstreamtest.New(t)
	layer, dg, _ := up.PushLayer(t, "big/hit", 4<<20)
	rc, err := layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || len(want) < 2*blockingMin {
		t.Fatalf("layer: %d bytes, %v; want at least %d", len(want), err, 2*blockingMin)
	}

	cfg := up.BerthConfig(t)
	cfg.Listen.MaxConns = 16 // the connection limit's wrapper in the chain too
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, Listeners{HTTP: ln}) }()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: time.Minute}
	t.Cleanup(func() {
		hc.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		s.Close()
	})
	url := fmt.Sprintf("http://%s/v2/big/hit/blobs/%s", ln.Addr(), dg)

	get := func(rng string, status int, body []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != status || !bytes.Equal(got, body) {
			t.Fatalf("GET %s: %d, %d bytes, %v; want %d and the blob's bytes", rng, resp.StatusCode, len(got), err, status)
		}
	}
	get("", http.StatusOK, want) // the fill
	deadline := time.Now().Add(time.Minute)
	for len(s.Store().Fills()) > 0 { // committed: the next GET is a hit on the stored file
		if time.Now().After(deadline) {
			t.Fatal("the fill is not committed after a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sl := s.sendL.Load()
	if sl == nil {
		t.Fatal("Serve recorded no send listener")
	}
	sends := func() int64 { return sl.sends.Load() }

	before := sends()
	get("", http.StatusOK, want)
	if n := sends() - before; n != 1 {
		t.Errorf("a whole hit: %d blocking sends, want 1", n)
	}
	before = sends()
	const from = 1000
	get(fmt.Sprintf("bytes=%d-%d", from, from+2*blockingMin-1), http.StatusPartialContent, want[from:from+2*blockingMin])
	if n := sends() - before; n != 1 {
		t.Errorf("a 2 MiB range of a hit: %d blocking sends, want 1", n)
	}
	before = sends()
	get(fmt.Sprintf("bytes=%d-%d", from, from+64<<10-1), http.StatusPartialContent, want[from:from+64<<10])
	if n := sends() - before; n != 0 {
		t.Errorf("a 64 KiB range of a hit: %d blocking sends, want 0 (Go's own path)", n)
	}
}
