package upstream

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

// upstreamReg is a real in-memory registry: push goes straight to it, the
// client under test talks to it through front, a fault-injecting wrapper.
type upstreamReg struct {
	handler http.Handler // the registry itself
	direct  *httptest.Server
	front   *httptest.Server
	fault   *faultHandler
}

func newUpstream(t *testing.T) *upstreamReg {
	t.Helper()
	u := &upstreamReg{handler: ggcrregistry.New(ggcrregistry.Logger(discardLog()))}
	u.start(t)
	return u
}

func (u *upstreamReg) start(t *testing.T) {
	u.direct = httptest.NewServer(u.handler)
	t.Cleanup(u.direct.Close)
	u.fault = &faultHandler{next: u.handler}
	u.front = httptest.NewServer(u.fault)
	t.Cleanup(u.front.Close)
}

// host is the address of the fronted registry.
func (u *upstreamReg) host() string { return strings.TrimPrefix(u.front.URL, "http://") }

// push writes a random image of one layer of size bytes under repo:tag and
// returns it.
func (u *upstreamReg) push(t *testing.T, repo, tag string, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(u.direct.URL, "http://") + "/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// faultHandler counts requests and lets a test answer some itself.
type faultHandler struct {
	next http.Handler
	mu   sync.Mutex // guards hook and seen
	hook func(w http.ResponseWriter, r *http.Request) bool
	seen []*http.Request

	blobGets  atomic.Int64
	blobBytes atomic.Int64 // blob body bytes written by the registry
}

func (f *faultHandler) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

func (f *faultHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.Clone(context.Background()))
	hook := f.hook
	f.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet {
		f.blobGets.Add(1)
		w = &countingWriter{ResponseWriter: w, n: &f.blobBytes}
	}
	f.next.ServeHTTP(w, r)
}

// requests returns the requests seen whose path contains sub.
func (f *faultHandler) requests(sub string) []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*http.Request
	for _, r := range f.seen {
		if strings.Contains(r.URL.Path, sub) {
			out = append(out, r)
		}
	}
	return out
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// newClient returns a client of one registry named after the host of its
// first endpoint.
func newClient(t *testing.T, rc config.Registry) *Client {
	t.Helper()
	if rc.Name == "" {
		rc.Name = strings.TrimPrefix(strings.TrimPrefix(rc.Endpoints[0], "http://"), "https://")
	}
	c, err := New([]config.Registry{rc}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// layerOf returns the digest and bytes (compressed) of img's first layer.
func layerOf(t *testing.T, img v1.Image) (digest.Digest, []byte) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	h, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String()), b
}

func repoOf(c *Client, name string) oci.Repo {
	for reg := range c.regs {
		return oci.Repo{Registry: reg, Name: name}
	}
	return oci.Repo{}
}
