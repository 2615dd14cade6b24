//go:build bench

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const MiB = 1 << 20

// randomFile writes size pseudo-random bytes (ChaCha8, seeded) to path and
// returns their sha256 digest ("sha256:<hex>").
func randomFile(path string, size int64, seed uint64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	r := rand.NewChaCha8(key)
	h := sha256.New()
	buf := make([]byte, 4*MiB)
	for left := size; left > 0; left -= int64(len(buf)) {
		b := buf[:min(int64(len(buf)), left)]
		r.Read(b)
		h.Write(b)
		if _, err := f.Write(b); err != nil {
			return "", err
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), f.Close()
}

// fileLayer is a layer whose bytes are a file, pushed as is (an
// uncompressed OCI layer; the registries never look inside).
type fileLayer struct {
	path string
	d    v1.Hash
	size int64
}

func (l fileLayer) Digest() (v1.Hash, error)             { return l.d, nil }
func (l fileLayer) DiffID() (v1.Hash, error)             { return l.d, nil }
func (l fileLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l fileLayer) Uncompressed() (io.ReadCloser, error) { return os.Open(l.path) }
func (l fileLayer) Size() (int64, error)                 { return l.size, nil }
func (l fileLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }

// image is a pushed test image.
type image struct {
	Repo, Tag string
	Layers    []blob // layers in order
	Config    blob
	Bytes     int64 // config + layers
	// ManifestDigest and ManifestPath: the pushed manifest, and a file
	// holding its bytes.
	ManifestDigest, ManifestPath string
}

type blob struct {
	Digest string
	Size   int64
	Path   string // local file (layers only)
}

// makeImage writes n random layers of size bytes under dir and pushes
// them as repo:tag to the registry at addr.
func makeImage(ctx context.Context, dir, addr, repo string, n int, size int64, seed uint64) (*image, error) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	out := &image{Repo: repo, Tag: "1"}
	for i := range n {
		p := filepath.Join(dir, fmt.Sprintf("%s-%d.bin", strings.ReplaceAll(repo, "/", "_"), i))
		d, err := randomFile(p, size, seed*100+uint64(i))
		if err != nil {
			return nil, err
		}
		h, _ := v1.NewHash(d)
		img, err = mutate.AppendLayers(img, fileLayer{path: p, d: h, size: size})
		if err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, blob{Digest: d, Size: size, Path: p})
		out.Bytes += size
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	raw, _ := img.RawConfigFile()
	out.Config = blob{Digest: cfgName.String(), Size: int64(len(raw))}
	out.Bytes += int64(len(raw))
	ref, err := name.ParseReference(addr+"/"+repo+":"+out.Tag, name.Insecure)
	if err != nil {
		return nil, err
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	return out, saveManifest(img, out, dir)
}

// saveManifest records img's manifest digest in out and its bytes in a
// file under dir.
func saveManifest(img v1.Image, out *image, dir string) error {
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	out.ManifestDigest = d.String()
	out.ManifestPath = filepath.Join(dir, strings.ReplaceAll(out.Repo, "/", "_")+".manifest.json")
	return os.WriteFile(out.ManifestPath, raw, 0o644)
}

// counter is a reverse proxy in front of the upstream registry that
// counts the blob bytes and blob GETs it serves. Safe for concurrent use.
type counter struct {
	Addr      string
	srv       *httptest.Server
	blobBytes atomic.Int64 // body bytes of blob GETs
	allBytes  atomic.Int64 // body bytes of every response
	blobGets  atomic.Int64 // blob GETs answered 200/206
	reqs      atomic.Int64
	inflight  atomic.Int64 // requests being answered
	live      atomic.Int64 // body bytes written so far, counted as they go
}

type countWriter struct {
	http.ResponseWriter
	n      int64
	status int
	lim    *limiter
	live   *atomic.Int64
}

// limiter paces all responses together to a byte rate: the site's shared
// link to its registry. Safe for concurrent use; nil means no limit.
type limiter struct {
	mu   sync.Mutex
	rate float64 // bytes per second
	next time.Time
}

// wait blocks until n more bytes fit in the rate.
func (l *limiter) wait(n int) {
	if l == nil {
		return
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	d := time.Until(l.next)
	l.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

func (w *countWriter) WriteHeader(s int) { w.status = s; w.ResponseWriter.WriteHeader(s) }
func (w *countWriter) Write(p []byte) (int, error) {
	w.lim.wait(len(p))
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	w.live.Add(int64(n))
	return n, err
}
func (w *countWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufPool) Put(x []byte) { b.p.Put(&x) }

// newCounter proxies to target (host:port), at most mibps MiB/s in all
// when mibps > 0.
func newCounter(target string, mibps float64) *counter {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	rp.BufferPool = &bufPool{p: sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}}
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	c := &counter{}
	var lim *limiter
	if mibps > 0 {
		lim = &limiter{rate: mibps * MiB}
	}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.inflight.Add(1)
		defer c.inflight.Add(-1)
		cw := &countWriter{ResponseWriter: w, status: 200, lim: lim, live: &c.live}
		rp.ServeHTTP(cw, r)
		c.reqs.Add(1)
		c.allBytes.Add(cw.n)
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && (cw.status == 200 || cw.status == 206) {
			c.blobBytes.Add(cw.n)
			c.blobGets.Add(1)
		}
	}))
	c.Addr = strings.TrimPrefix(c.srv.URL, "http://")
	return c
}

// quiesce waits (at most 10 s) until the upstream has been idle for
// 200 ms (distribution's proxy goes on asking it for a while for requests
// whose clients are gone when a load run ends), then zeroes the counts.
func (c *counter) quiesce() {
	n := c.reqs.Load()
	for i := 0; i < 50; i++ {
		time.Sleep(200 * time.Millisecond) // another process's requests draining
		m := c.reqs.Load()
		if m == n && c.inflight.Load() == 0 {
			break
		}
		n = m
	}
	c.reset()
}

// reset zeroes the counts (between runs).
func (c *counter) reset() {
	c.blobBytes.Store(0)
	c.allBytes.Store(0)
	c.blobGets.Store(0)
	c.reqs.Store(0)
	c.live.Store(0)
	c.srv.CloseClientConnections()
}
