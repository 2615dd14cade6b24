package security

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/test/upstreamtest"
)

// hostileSetup is one berth in front of two registries: "hostile", a real
// distribution registry behind a proxy that misbehaves on demand, and
// "clean", another real one reached directly.
type hostileSetup struct {
	b       *berth
	up      *upstreamtest.Registry // behind px
	px      *hostile
	clean   *upstreamtest.Registry
	meta    *metadata
	dead    string // a loopback host:port nothing listens on
	notTLS  string // a loopback host:port answering plain HTTP
	base    usage
	closeFn func()
}

// quota is the store quota of the hostile setup: the cap an endless body
// meets when no size is known.
const quota = 24 << 20

func newHostileSetup(t *testing.T) *hostileSetup {
	t.Helper()
	s := &hostileSetup{up: upstreamtest.New(t), clean: upstreamtest.New(t), meta: newMetadata(t), dead: freeAddr(t)}
	s.px = newHostile(t, s.up.URL)
	notTLS := newMetadata(t) // any plain HTTP server will do
	s.notTLS = strings.TrimPrefix(notTLS.URL, "http://")
	s.b = startBerth(t, map[string]any{
		"tagTTL":          "1ms", // every tag request revalidates upstream
		"defaultRegistry": s.px.Host,
		"cache":           map[string]any{"maxSize": strconv.Itoa(quota)},
		"registries": []any{
			map[string]any{"name": s.px.Host, "endpoints": []string{s.px.URL},
				// Long enough that a stall is never cut by it within the test.
				"timeouts": map[string]any{"idleRead": "10m"}},
			map[string]any{"name": s.clean.Host, "endpoints": []string{s.clean.URL}},
			map[string]any{"name": "private.example", "endpoints": []string{"http://" + s.dead, "https://" + s.notTLS},
				"failBackoff": "1ms"},
		},
	})
	s.closeFn = func() {
		s.px.CloseClientConnections()
		s.up.CloseClientConnections()
		s.clean.CloseClientConnections()
		s.meta.CloseClientConnections()
		notTLS.CloseClientConnections()
	}
	// Warm up every path once (manifest by tag and digest, blobs, tags/list)
	// so the baseline holds what berth keeps for good.
	warm := randomImage(t, 1024)
	s.up.Push(t, "warm/app", "v1", warm)
	s.clean.Push(t, "warm/app", "v1", warm)
	for _, ns := range []string{s.px.Host, s.clean.Host} {
		pullImage(t, s.b, "warm/app", "v1", ns, warm)
		if a := s.b.get(t, http.MethodGet, "warm/app/tags/list", ns); a.Status != http.StatusOK {
			t.Fatalf("warm-up tags/list: %d %s", a.Status, a.Body)
		}
	}
	s.closeFn()
	s.b.settle(t, usage{Goroutines: 1 << 20, FDs: 1 << 20}, s.closeFn)
	s.base = s.b.usage(t)
	return s
}

// pullImage pulls repo:tag of ns through b like a client and checks every
// byte against img.
func pullImage(t *testing.T, b *berth, repo, tag, ns string, img v1.Image) {
	t.Helper()
	want, _ := img.Digest()
	a := b.get(t, http.MethodGet, repo+"/manifests/"+tag, ns)
	if a.Status != http.StatusOK || digest.FromBytes(a.Body).String() != want.String() {
		t.Fatalf("pull %s:%s from %s: %d %.200s, want %s", repo, tag, ns, a.Status, a.Body, want)
	}
	layers, _ := img.Layers()
	cfg, _ := img.ConfigName()
	ds := []v1.Hash{cfg}
	for _, l := range layers {
		d, _ := l.Digest()
		ds = append(ds, d)
	}
	for _, d := range ds {
		a := b.get(t, http.MethodGet, repo+"/blobs/"+d.String(), ns)
		if a.Status != http.StatusOK || a.Err != nil || digest.FromBytes(a.Body).String() != d.String() {
			t.Fatalf("blob %s from %s: %d %v", d, ns, a.Status, a.Err)
		}
	}
}

func randomImage(t *testing.T, size int64) v1.Image {
	t.Helper()
	img, err := random.Image(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func layerDigest(t *testing.T, img v1.Image) digest.Digest {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(d.String())
}

func manifestOf(t *testing.T, img v1.Image) (digest.Digest, string, []byte) {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(raw), string(mt), raw
}

// TestHostileUpstream: what a configured upstream may make berth do.
func TestHostileUpstream(t *testing.T) {
	s := newHostileSetup(t)
	metaDigest := digest.FromString(metadataBody)

	// A redirect to a loopback address (a stand-in for a metadata service)
	// is never followed, whichever route the client asked for, and whether
	// the address is written as an IP or a name that resolves to one.
	t.Run("redirect to loopback", func(t *testing.T) {
		img := randomImage(t, 2048)
		s.up.Push(t, "redir/app", "v1", img)
		layer := layerDigest(t, img)
		metaPort := s.meta.URL[strings.LastIndex(s.meta.URL, ":")+1:]
		for _, target := range []string{s.meta.URL, "http://localhost:" + metaPort} {
			for _, route := range []struct{ path, suffix string }{
				{"redir/app/tags/list", "/tags/list"},
				{"redir/app/manifests/v1", "/manifests/v1"},
				{"redir/app/blobs/" + layer.String(), "/blobs/" + layer.String()},
			} {
				clear := s.px.set(t, on(http.MethodGet, route.suffix, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, target+"/latest/meta-data/iam/security-credentials/role", http.StatusTemporaryRedirect)
				}))
				a := s.b.get(t, http.MethodGet, route.path, s.px.Host)
				clear()
				wantError(t, "GET "+route.path+" redirected to "+target, a, http.StatusBadGateway, "UNKNOWN")
				if strings.Contains(string(a.Body), "AKIAEXAMPLE") {
					t.Errorf("GET %s: the metadata service's answer reached the client", route.path)
				}
			}
		}
		if n := s.meta.hits.Load(); n != 0 {
			t.Errorf("berth followed redirects to loopback: the metadata service got %d requests", n)
		}
		s.b.wantNotStored(t, metaDigest)
		// The tag is not bound to anything: with the proxy honest again,
		// the client gets the real image.
		pullImage(t, s.b, "redir/app", "v1", s.px.Host, img)
		s.b.settle(t, s.base, s.closeFn)
	})

	// A manifest GET whose body is no manifest, or whose declared media
	// type does not match its bytes, is refused and stores nothing.
	t.Run("non-manifest bodies", func(t *testing.T) {
		img := randomImage(t, 512)
		imgDigest, _, imgRaw := manifestOf(t, img)
		for _, tag := range []string{"v1", "a", "b", "c"} {
			s.up.Push(t, "junk/app", tag, img)
		}
		// Each case its own tag, never cached: berth GETs it.
		cases := []struct {
			name, ref, contentType string
			body                   []byte
		}{
			{"json by tag", "a", "application/json", []byte(metadataBody)},
			{"json labelled a manifest", "b", "application/vnd.oci.image.manifest.v1+json", []byte(metadataBody)},
			{"manifest labelled an index", "c", "application/vnd.oci.image.index.v1+json", imgRaw},
			{"json by digest", metaDigest.String(), "application/json", []byte(metadataBody)},
			{"json by digest labelled a manifest", metaDigest.String(), "application/vnd.docker.distribution.manifest.v2+json", []byte(metadataBody)},
		}
		for _, c := range cases {
			clear := s.px.set(t, on(http.MethodGet, "/manifests/"+c.ref, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.contentType)
				w.Header().Set("Docker-Content-Digest", digest.FromBytes(c.body).String())
				w.Header().Set("Content-Length", strconv.Itoa(len(c.body)))
				_, _ = w.Write(c.body)
			}))
			a := s.b.get(t, http.MethodGet, "junk/app/manifests/"+c.ref, s.px.Host)
			clear()
			wantError(t, c.name, a, http.StatusBadGateway, "MANIFEST_INVALID")
		}
		s.b.wantNotStored(t, metaDigest, imgDigest)
		pullImage(t, s.b, "junk/app", "v1", s.px.Host, img)
		a := s.b.get(t, http.MethodGet, "junk/app/manifests/"+metaDigest.String(), s.px.Host)
		wantError(t, "the junk by digest afterwards", a, http.StatusNotFound, "MANIFEST_UNKNOWN")
		s.b.settle(t, s.base, s.closeFn)
	})

	// A tag's new digest learned by HEAD is served only once that registry
	// confirms it: a HEAD naming content berth holds from another registry
	// does not point the tag at it.
	t.Run("lying HEAD digest", func(t *testing.T) {
		mine, theirs := randomImage(t, 512), randomImage(t, 512)
		mineDigest, _, _ := manifestOf(t, mine)
		theirsDigest, theirsType, theirsRaw := manifestOf(t, theirs)
		s.up.Push(t, "tagged/app", "v1", mine)
		s.clean.Push(t, "other/app", "v1", theirs)
		pullImage(t, s.b, "tagged/app", "v1", s.px.Host, mine)
		pullImage(t, s.b, "other/app", "v1", s.clean.Host, theirs)
		clear := s.px.set(t, on(http.MethodHead, "/tagged/app/manifests/v1", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", theirsType)
			w.Header().Set("Docker-Content-Digest", theirsDigest.String())
			w.Header().Set("Content-Length", strconv.Itoa(len(theirsRaw)))
		}))
		for _, method := range []string{http.MethodHead, http.MethodGet} {
			a := s.b.get(t, method, "tagged/app/manifests/v1", s.px.Host)
			if got := a.Header.Get("Docker-Content-Digest"); got == theirsDigest.String() || (method == http.MethodGet && digest.FromBytes(a.Body) == theirsDigest) {
				t.Errorf("%s tagged/app:v1 after a lying HEAD: berth serves the other registry's %s", method, theirsDigest)
			} else if a.Status != http.StatusOK || got != mineDigest.String() {
				t.Errorf("%s tagged/app:v1 after a lying HEAD: %d %s %.200s, want the last confirmed %s", method, a.Status, got, a.Body, mineDigest)
			}
		}
		clear()
		pullImage(t, s.b, "tagged/app", "v1", s.px.Host, mine)
		s.b.settle(t, s.base, s.closeFn)
	})

	// An upstream blob body without Content-Length that never ends is cut
	// at the store's quota: it never grows past it, and nothing is kept.
	t.Run("endless body", func(t *testing.T) {
		img := randomImage(t, 4096)
		s.up.Push(t, "endless/app", "v1", img)
		layer := layerDigest(t, img)
		const bound = 4 * quota // the proxy's own bound, so the test ends on today's code too
		var sent atomic.Int64
		clear := s.px.set(t, on(http.MethodGet, "/blobs/"+layer.String(), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			buf := make([]byte, 64<<10)
			for sent.Load() < bound {
				n, err := w.Write(buf)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		}))
		a := s.b.get(t, http.MethodGet, "endless/app/blobs/"+layer.String(), s.px.Host)
		clear()
		if a.Err == nil && a.Status == http.StatusOK {
			t.Errorf("endless body: the client got a whole 200 of %d bytes", len(a.Body))
		}
		if n := sent.Load(); n > quota+16<<20 {
			t.Errorf("endless body: berth read %d MiB, past the %d MiB quota", n>>20, quota>>20)
		}
		s.b.wantNotStored(t, layer)
		pullImage(t, s.b, "endless/app", "v1", s.px.Host, img)
		s.b.settle(t, s.base, s.closeFn)
	})

	// A fill through a registry that stalls does not hold a client of
	// another registry asking for the same digest: it falls back to its
	// own registry and gets every byte.
	t.Run("stalled fill, joiner from a healthy registry", func(t *testing.T) {
		img := randomImage(t, 1<<20)
		s.up.Push(t, "stall/app", "v1", img)
		s.clean.Push(t, "stall/app", "v1", img)
		layer := layerDigest(t, img)
		ls, _ := img.Layers()
		rc, err := ls[0].Compressed()
		if err != nil {
			t.Fatal(err)
		}
		layerBytes, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		stalled := make(chan struct{})
		release := make(chan struct{})
		var once atomic.Bool
		clear := s.px.set(t, on(http.MethodGet, "/blobs/"+layer.String(), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(len(layerBytes)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(layerBytes[:len(layerBytes)/2]) // half, then nothing: a stall
			w.(http.Flusher).Flush()
			if once.CompareAndSwap(false, true) {
				close(stalled)
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}))
		defer clear()
		ctx, cancel := context.WithCancel(context.Background())
		first := make(chan error, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.b.URL+"/v2/stall/app/blobs/"+layer.String()+"?ns="+s.px.Host, nil)
			resp, err := plain.Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			first <- err
		}()
		select {
		case <-stalled:
		case <-time.After(60 * time.Second):
			t.Fatal("the hostile registry's blob was never asked for")
		}
		c := &http.Client{Transport: plain.Transport, Timeout: 60 * time.Second}
		start := time.Now()
		resp, err := c.Get(s.b.URL + "/v2/stall/app/blobs/" + layer.String() + "?ns=" + s.clean.Host)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			t.Errorf("a client of the healthy registry, joined to the stalled fill: %v after %s", err, time.Since(start).Round(time.Second))
		case resp.StatusCode != http.StatusOK || digest.FromBytes(body) != layer:
			t.Errorf("a client of the healthy registry: %d, %d bytes of digest %s, want %s", resp.StatusCode, len(body), digest.FromBytes(body), layer)
		}
		cancel()
		close(release)
		<-first
		clear()
		s.b.blobFiles(t) // every file matches its name
		s.b.settle(t, s.base, s.closeFn)
	})

	// Errors name the registry and a reason, never its endpoints' addresses.
	t.Run("errors name no endpoint address", func(t *testing.T) {
		for _, path := range []string{"some/app/manifests/v1", "some/app/tags/list",
			"some/app/blobs/sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("x")))} {
			a := s.b.get(t, http.MethodGet, path, "private.example")
			wantError(t, path+" of an unreachable registry", a, http.StatusServiceUnavailable, "UNAVAILABLE")
			msg := string(a.Body)
			for _, addr := range []string{s.dead, s.notTLS, "127.0.0.1"} {
				if strings.Contains(msg, addr) {
					t.Errorf("%s: the client's error names %s: %s", path, addr, msg)
				}
			}
			if !strings.Contains(msg, "private.example") {
				t.Errorf("%s: the client's error does not name the registry: %s", path, msg)
			}
		}
		s.b.settle(t, s.base, s.closeFn)
	})
}
