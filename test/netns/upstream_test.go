package netns

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the upstream's storage
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"
)

// request is one request the upstream served, as /_test/state reports it.
type request struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	Remote string `json:"remote"` // the client's IP
	Range  string `json:"range,omitempty"`
	Bytes  int64  `json:"bytes"` // body bytes sent, once the answer ended
}

// upstreamState is the body of GET /_test/state.
type upstreamState struct {
	Requests []request `json:"requests"` // every /v2 request, in arrival order
	Held     []request `json:"held"`     // blob bodies held half way so far
}

// upstream is a distribution registry that records every request and can
// hold blob bodies half way (POST /_test/hold, POST /_test/release). It
// runs as its own process inside the upstream namespace.
type upstream struct {
	next http.Handler

	mu    sync.Mutex    // guards state and gate
	state upstreamState // what was served
	gate  chan struct{} // non-nil: blob bodies stop half way until closed
}

// runUpstream is the "upstream" role: serve on -addr, push each
// -push repo:tag=layoutdir image to itself, print "ready", serve until
// SIGTERM.
func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	addr := fs.String("addr", "", "listen address")
	root := fs.String("root", "", "storage directory")
	var pushes []string
	fs.Func("push", "repo:tag=layoutdir", func(s string) error { pushes = append(pushes, s); return nil })
	if err := fs.Parse(args); err != nil {
		return err
	}
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": *root},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	cfg.Log.Level = "error"
	u := &upstream{next: handlers.NewApp(context.Background(), cfg)}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: u.mux(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	for _, p := range pushes {
		if err := push(*addr, p); err != nil {
			return err
		}
	}
	u.mu.Lock()
	u.state = upstreamState{} // count what the test does, not the pushes
	u.mu.Unlock()
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	u.release()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return nil
}

// push writes the image of an OCI layout to the registry at addr.
func push(addr, spec string) error {
	ref, dir, ok := strings.Cut(spec, "=")
	if !ok {
		return fmt.Errorf("push %q: want repo:tag=dir", spec)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	im, err := ii.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		return fmt.Errorf("push %s: want one image in %s: %v", ref, dir, err)
	}
	img, err := ii.Image(im.Manifests[0].Digest)
	if err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	r, err := name.ParseReference(addr+"/"+ref, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	return nil
}

func (u *upstream) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_test/state", func(w http.ResponseWriter, _ *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		_ = json.NewEncoder(w).Encode(u.state)
	})
	mux.HandleFunc("POST /_test/hold", func(http.ResponseWriter, *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.gate == nil {
			u.gate = make(chan struct{})
		}
	})
	mux.HandleFunc("POST /_test/release", func(http.ResponseWriter, *http.Request) { u.release() })
	mux.HandleFunc("/", u.serveRegistry)
	return mux
}

func (u *upstream) release() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.gate != nil {
		close(u.gate)
		u.gate = nil
	}
}

func (u *upstream) serveRegistry(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	req := request{Method: r.Method, Path: r.URL.Path, Remote: host, Range: r.Header.Get("Range")}
	u.mu.Lock()
	u.state.Requests = append(u.state.Requests, req)
	at := len(u.state.Requests) - 1
	gate := u.gate
	u.mu.Unlock()
	cw := &countingWriter{ResponseWriter: w}
	w = cw
	if gate != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
		w = &gatedWriter{ResponseWriter: w, gate: gate, onHold: func() {
			u.mu.Lock()
			u.state.Held = append(u.state.Held, req)
			u.mu.Unlock()
		}}
	}
	u.next.ServeHTTP(w, r)
	u.mu.Lock()
	if at < len(u.state.Requests) { // not reset meanwhile
		u.state.Requests[at].Bytes = cw.n
	}
	u.mu.Unlock()
}

// countingWriter counts the body bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	m, err := c.ResponseWriter.Write(p)
	c.n += int64(m)
	return m, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// gatedWriter writes the first half of a body, flushes, reports the hold
// and blocks until gate closes.
type gatedWriter struct {
	http.ResponseWriter
	gate    chan struct{}
	onHold  func()
	written int64
	held    bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	var total int64
	_, _ = fmt.Sscan(g.Header().Get("Content-Length"), &total)
	if g.held || total <= 0 || g.written+int64(len(p)) <= total/2 {
		m, err := g.ResponseWriter.Write(p)
		g.written += int64(m)
		return m, err
	}
	n := total/2 - g.written
	m, err := g.ResponseWriter.Write(p[:n])
	g.written += int64(m)
	if err != nil {
		return m, err
	}
	if f, ok := g.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	g.held = true
	g.onHold()
	<-g.gate
	m2, err := g.ResponseWriter.Write(p[n:])
	g.written += int64(m2)
	return m + m2, err
}

func (g *gatedWriter) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{g}, src) // every byte through Write
}
