// Package upstreamtest runs a real upstream registry for tests: the
// distribution v3 registry in process, behind a handler that counts the
// requests it serves and can inject faults (slow, wrong or cut bodies,
// outages). Tests assert on its counters, never on mocks.
package upstreamtest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // storage for the in-process registry
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"
)

// Registry is a distribution registry on a loopback port.
type Registry struct {
	*httptest.Server
	Host string // 127.0.0.1:port

	mu     sync.Mutex
	counts map[string]int   // "GET /v2/<name>/blobs/<digest>" → requests
	sent   map[string]int64 // "/v2/<name>/blobs/<digest>" → body bytes sent to GETs
	ranges []string         // the Range header of each blob GET, "" for none

	down    atomic.Bool               // answer every request 503
	status  atomic.Int32              // when set, answer every request with it (SetStatus)
	silent  atomic.Bool               // answer nothing: hold every request until its client gives up
	held    atomic.Int64              // requests held while silent
	corrupt atomic.Bool               // flip a byte in every blob body
	gate    atomic.Pointer[chan bool] // when set, blob bodies stop half way until it is closed
	gateMid atomic.Bool               // the gate holds only ranges that start past byte 0 (GateRanges)
	halfway chan string               // the path of each blob body held half way (Halfway)
	log     []Request                 // every request, in arrival order; guarded by mu
	gated   []Request                 // blob GETs held half way by Gate; guarded by mu
	errors5 atomic.Int64              // 5xx answers the registry itself gave
}

// IgnoreLeaks is what goleak must not count in a test binary that ran a
// registry from here: distribution's notification broadcaster, started
// with the registry's app and never stopped.
func IgnoreLeaks() goleak.Option {
	return goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run")
}

// New starts a registry; it stops when the test ends.
func New(t testing.TB) *Registry {
	t.Helper()
	r := Start(t.TempDir())
	t.Cleanup(r.Close)
	t.Cleanup(r.CloseClientConnections) // first: a request held while silent ends
	return r
}

// Start starts a registry storing under dir, for a command rather than a
// test (test/load); the caller closes it.
func Start(dir string) *Registry {
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	// The filesystem driver: the in-memory one copies on every append and
	// takes minutes over a 64 MiB blob.
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": dir},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.Log.Level = "error"
	cfg.HTTP.Headers = http.Header{"X-Content-Type-Options": []string{"nosniff"}}
	app := handlers.NewApp(context.Background(), cfg)
	r := &Registry{counts: map[string]int{}, sent: map[string]int64{}, halfway: make(chan string, 64)}
	r.Server = httptest.NewServer(r.wrap(app))
	r.Host = strings.TrimPrefix(r.URL, "http://")
	return r
}

func (r *Registry) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		key := req.Method + " " + req.URL.Path
		host, _, _ := net.SplitHostPort(req.RemoteAddr)
		seen := Request{Method: req.Method, Path: req.URL.Path, Remote: host, Range: req.Header.Get("Range")}
		r.mu.Lock()
		r.counts[key]++
		r.log = append(r.log, seen)
		at := len(r.log) - 1
		r.mu.Unlock()
		if r.down.Load() {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		if code := int(r.status.Load()); code != 0 {
			switch code {
			case http.StatusTooManyRequests:
				w.Header().Set("Retry-After", "3600") // longer than any client waits
			case http.StatusUnauthorized: // a token server of its own, which refuses too
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+r.URL+`/token",service="upstreamtest"`)
			}
			http.Error(w, "status set by the test", code)
			return
		}
		if r.silent.Load() {
			r.held.Add(1)
			<-req.Context().Done() // the client's timeout, or the server's Close
			return
		}
		cw := &codeWriter{ResponseWriter: w}
		if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			fw := &faultWriter{ResponseWriter: cw, r: r, req: seen}
			next.ServeHTTP(fw, req)
			r.mu.Lock()
			r.sent[req.URL.Path] += fw.written
			r.ranges = append(r.ranges, req.Header.Get("Range"))
			r.mu.Unlock()
		} else {
			next.ServeHTTP(cw, req)
		}
		if cw.code >= 500 {
			r.errors5.Add(1)
		}
		r.mu.Lock()
		if at < len(r.log) { // not forgotten meanwhile
			r.log[at].Bytes = cw.n
		}
		r.mu.Unlock()
	})
}

// Request is one request the registry received.
type Request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Remote string `json:"remote"` // the client's IP
	Range  string `json:"range,omitempty"`
	Bytes  int64  `json:"bytes"` // body bytes sent, once the answer ended
}

// Requests returns every request so far, in arrival order.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.log)
}

// HeldRequests returns the blob GETs that Gate held half way so far.
func (r *Registry) HeldRequests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.gated)
}

// Forget drops the requests seen so far from every count and list (after
// a test's own pushes, say).
func (r *Registry) Forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts, r.sent, r.log, r.gated, r.ranges = map[string]int{}, map[string]int64{}, nil, nil, nil
}

// Count returns how many requests of method reached path so far.
func (r *Registry) Count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[method+" "+path]
}

// BlobGETs returns how many GETs blob digest of repo received.
func (r *Registry) BlobGETs(repo, digest string) int {
	return r.Count(http.MethodGet, "/v2/"+repo+"/blobs/"+digest)
}

// BlobBytes returns the body bytes GETs of blob digest were sent, under
// any repository, and the Range header of every blob GET so far.
func (r *Registry) BlobBytes(digest string) (int64, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := int64(0)
	for k, c := range r.sent {
		if strings.HasSuffix(k, "/blobs/"+digest) {
			n += c
		}
	}
	return n, slices.Clone(r.ranges)
}

// AnyBlobGETs returns how many GETs blob digest received under any
// repository.
func (r *Registry) AnyBlobGETs(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.counts {
		if strings.HasPrefix(k, "GET ") && strings.HasSuffix(k, "/blobs/"+digest) {
			n += c
		}
	}
	return n
}

// Errors5xx returns how many 5xx answers the registry gave of itself (not
// those SetDown or SetStatus made).
func (r *Registry) Errors5xx() int64 { return r.errors5.Load() }

// Total returns how many requests reached the registry so far.
func (r *Registry) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.counts {
		if !strings.HasSuffix(k, "/v2/") {
			n += c
		}
	}
	return n
}

// SetDown makes every request fail with 503 (an outage) or serve again.
func (r *Registry) SetDown(down bool) { r.down.Store(down) }

// SetStatus makes every request answer code with a plain-text body (a 429
// says Retry-After: 3600); 0 serves again.
func (r *Registry) SetStatus(code int) { r.status.Store(int32(code)) }

// SetSilent makes the registry accept requests and never answer them, as
// an upstream that drops packets: each is held until its client gives up.
func (r *Registry) SetSilent(silent bool) { r.silent.Store(silent) }

// Held returns how many requests were held while silent.
func (r *Registry) Held() int64 { return r.held.Load() }

// SetCorrupt makes blob bodies carry one flipped byte.
func (r *Registry) SetCorrupt(c bool) { r.corrupt.Store(c) }

// Halfway receives the path of each blob body held half way by Gate (up
// to 64 not yet received; more are not announced).
func (r *Registry) Halfway() <-chan string { return r.halfway }

// Gate makes blob bodies stop half way until the returned func is called.
func (r *Registry) Gate() (release func()) { return r.setGate(false) }

// GateRanges is Gate for the blob GETs of a range that starts past byte 0
// only (a striped fill's stripes; its first bytes and whole-blob GETs
// flow).
func (r *Registry) GateRanges() (release func()) { return r.setGate(true) }

func (r *Registry) setGate(mid bool) (release func()) {
	r.gateMid.Store(mid)
	ch := make(chan bool)
	r.gate.Store(&ch)
	var once sync.Once
	return func() { once.Do(func() { r.gate.Store(nil); close(ch) }) }
}

// Push writes img as host/repo:tag.
func (r *Registry) Push(t testing.TB, repo, tag string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// BerthConfig is berth's embedded default config with r as its only (and
// default) registry and the store in a temp dir of t's; not validated, so
// a test can change it first.
func (r *Registry) BerthConfig(t testing.TB) *config.Config {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registries = []config.Registry{{Name: r.Host, Endpoints: []string{r.URL}}}
	cfg.DefaultRegistry = r.Host
	cfg.Cache.Dir = t.TempDir()
	return cfg
}

// PushLayer pushes repo:v1, an image of one random layer of size bytes
// (its file's; the gzipped blob is a little larger), and returns that
// layer with its blob's digest and size.
func (r *Registry) PushLayer(t testing.TB, repo string, size int64) (v1.Layer, v1.Hash, int64) {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.Push(t, repo, "v1", img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	n, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	return layers[0], d, n
}

// PushIndex writes idx as host/repo:tag.
func (r *Registry) PushIndex(t testing.TB, repo, tag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	return d
}

// faultWriter applies the registry's blob faults to a body.
type faultWriter struct {
	http.ResponseWriter
	r       *Registry
	req     Request
	written int64
	total   int64
	flipped bool
}

func (f *faultWriter) Write(p []byte) (int, error) {
	if f.total == 0 {
		f.total = contentLength(f.Header())
	}
	if f.r.corrupt.Load() && !f.flipped && len(p) > 0 {
		p = append([]byte(nil), p...)
		p[len(p)/2] ^= 0xff
		f.flipped = true
	}
	if g := f.r.gate.Load(); g != nil && f.total > 0 && f.written+int64(len(p)) > f.total/2 && (!f.r.gateMid.Load() || midRange(f.req.Range)) {
		n := f.total/2 - f.written
		if n > 0 {
			m, err := f.ResponseWriter.Write(p[:n])
			f.written += int64(m)
			if err != nil {
				return m, err
			}
			p = p[n:]
		}
		if fl, ok := f.ResponseWriter.(http.Flusher); ok {
			fl.Flush()
		}
		f.r.mu.Lock()
		f.r.gated = append(f.r.gated, f.req)
		f.r.mu.Unlock()
		select {
		case f.r.halfway <- f.req.Path:
		default:
		}
		<-*g
		m, err := f.ResponseWriter.Write(p)
		f.written += int64(m)
		return m + int(n), err
	}
	m, err := f.ResponseWriter.Write(p)
	f.written += int64(m)
	return m, err
}

func (f *faultWriter) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{f}, src) // every byte through Write, where the faults are
}

// midRange reports whether a Range header asks for bytes from past 0.
func midRange(h string) bool {
	spec, ok := strings.CutPrefix(h, "bytes=")
	return ok && !strings.HasPrefix(spec, "0-") && !strings.HasPrefix(spec, "-")
}

// codeWriter keeps the status of an answer and counts its body bytes.
type codeWriter struct {
	http.ResponseWriter
	code int
	n    int64
}

func (c *codeWriter) Write(p []byte) (int, error) {
	m, err := c.ResponseWriter.Write(p)
	c.n += int64(m)
	return m, err
}

func (c *codeWriter) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *codeWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *codeWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func contentLength(h http.Header) int64 {
	var n int64
	for _, c := range h.Get("Content-Length") {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
