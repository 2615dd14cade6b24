package security

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// hostile is a proxy in front of a real registry that misbehaves on
// purpose: while a trick is set, the requests it matches get the trick's
// answer instead of the registry's.
type hostile struct {
	*httptest.Server
	Host string // 127.0.0.1:port, also the registry's name in berth

	trick atomic.Pointer[trick]
	mu    sync.Mutex
	seen  []string // "METHOD path" of every request
}

// trick answers a request the proxy would pass on; it reports false to
// let the registry answer after all.
type trick func(w http.ResponseWriter, r *http.Request) bool

func newHostile(t *testing.T, upstreamURL string) *hostile {
	t.Helper()
	u, err := url.Parse(upstreamURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = nil
	h := &hostile{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, r.Method+" "+r.URL.Path)
		h.mu.Unlock()
		if tr := h.trick.Load(); tr != nil && (*tr)(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	h.Host = strings.TrimPrefix(h.URL, "http://")
	t.Cleanup(h.Close)
	return h
}

// set makes tr the proxy's trick until the returned func is called (or the
// test ends).
func (h *hostile) set(t *testing.T, tr trick) (clear func()) {
	h.trick.Store(&tr)
	clear = func() { h.trick.Store(nil) }
	t.Cleanup(clear)
	return clear
}

// on returns a trick that applies answer to requests of method whose path
// ends with suffix.
func on(method, suffix string, answer func(w http.ResponseWriter, r *http.Request)) trick {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != method || !strings.HasSuffix(r.URL.Path, suffix) {
			return false
		}
		answer(w, r)
		return true
	}
}

// metadata stands for a cloud metadata service on a loopback port: JSON
// credentials, and a count of every request it got.
type metadata struct {
	*httptest.Server
	hits atomic.Int64
}

// metadataBody is what it answers: JSON, but no manifest.
const metadataBody = `{"Code":"Success","AccessKeyId":"AKIAEXAMPLE","SecretAccessKey":"not-a-real-secret","Token":"x"}`

func newMetadata(t *testing.T) *metadata {
	t.Helper()
	return newMetadataOn(t, nil)
}

// newMetadataOn is newMetadata on ln (nil: a loopback port of its own).
func newMetadataOn(t *testing.T, ln net.Listener) *metadata {
	t.Helper()
	m := &metadata{}
	m.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(metadataBody))
	}))
	if ln != nil {
		m.Listener.Close()
		m.Listener = ln
	}
	m.Start()
	t.Cleanup(m.Close)
	return m
}
