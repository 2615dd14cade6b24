package netns

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-registry/berth/test/upstreamtest"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem" // the upstream's storage
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// request is one request the upstream served, as /_test/state reports it.
type request = upstreamtest.Request

// upstreamState is the body of GET /_test/state.
type upstreamState struct {
	Requests []request `json:"requests"` // every /v2 request, in arrival order
	Held     []request `json:"held"`     // blob bodies held half way so far
}

// upstream is upstreamtest's registry served on the namespace's address,
// with its state and its gate on HTTP for the test outside (GET
// /_test/state, POST /_test/hold, POST /_test/release). It runs as its own
// process inside the upstream namespace.
type upstream struct {
	reg *upstreamtest.Registry

	mu      sync.Mutex // guards release
	release func()     // non-nil while blob bodies are held
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
	u := &upstream{reg: upstreamtest.Start(*root)}
	defer u.reg.Close()
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
	u.reg.Forget() // count what the test does, not the pushes
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	<-ctx.Done()
	u.unhold()
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
		_ = json.NewEncoder(w).Encode(upstreamState{Requests: u.reg.Requests(), Held: u.reg.HeldRequests()})
	})
	mux.HandleFunc("POST /_test/hold", func(http.ResponseWriter, *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if u.release == nil {
			u.release = u.reg.Gate()
		}
	})
	mux.HandleFunc("POST /_test/release", func(http.ResponseWriter, *http.Request) { u.unhold() })
	mux.Handle("/", u.reg.Config.Handler)
	return mux
}

func (u *upstream) unhold() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.release != nil {
		u.release()
		u.release = nil
	}
}
