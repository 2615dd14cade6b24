//go:build bench

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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

	evMu   sync.Mutex
	events []upEvent // every request answered since reset, when recording
	record bool
}

// upEvent is one request the upstream answered: the -timeline's record.
type upEvent struct {
	Method, Path, Range string
	Start, End          time.Time
	Status              int
	Bytes               int64
}

type countWriter struct {
	http.ResponseWriter
	n      int64
	status int
	lims   []*limiter // each paces every write (nil entries: no limit)
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
	for _, l := range w.lims {
		l.wait(len(p))
	}
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
	return newCounterWAN(target, mibps, wan{})
}

// wan is what the counting proxy adds to every answer, to look like a
// registry across the internet rather than on loopback: RTT before each
// request's answer starts, and once more before a new connection's first
// request (its TCP handshake); ConnMBps caps each response's body (one
// response at a time per HTTP/1.1 connection: the per-connection
// bandwidth a CDN or a long path gives one TCP stream). Zero: none.
type wan struct {
	RTT      time.Duration
	ConnMBps float64 // 10^6 bytes per second
}

func (w wan) String() string {
	return fmt.Sprintf("%g ms RTT, %g MB/s per connection", float64(w.RTT)/float64(time.Millisecond), w.ConnMBps)
}

// newCounterWAN is newCounter with w added to every answer.
func newCounterWAN(target string, mibps float64, w wan) *counter {
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	rp.FlushInterval = -1
	rp.BufferPool = &bufPool{p: sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}}
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	c := &counter{}
	var lim *limiter
	if mibps > 0 {
		lim = &limiter{rate: mibps * MiB}
	}
	c.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		c.inflight.Add(1)
		defer c.inflight.Add(-1)
		lims := []*limiter{lim}
		if w.ConnMBps > 0 {
			lims = append(lims, &limiter{rate: w.ConnMBps * 1e6})
		}
		cw := &countWriter{ResponseWriter: rw, status: 200, lims: lims, live: &c.live}
		t0 := time.Now()
		// Counted also when the client goes away mid-body (the reverse
		// proxy then panics with http.ErrAbortHandler).
		defer func() {
			c.evMu.Lock()
			if c.record {
				c.events = append(c.events, upEvent{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Start: t0, End: time.Now(), Status: cw.status, Bytes: cw.n})
			}
			c.evMu.Unlock()
			c.reqs.Add(1)
			c.allBytes.Add(cw.n)
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && (cw.status == 200 || cw.status == 206) {
				c.blobBytes.Add(cw.n)
				c.blobGets.Add(1)
			}
		}()
		if w.RTT > 0 {
			time.Sleep(w.RTT) // the request's way there and the answer's first byte's way back
		}
		rp.ServeHTTP(cw, r)
	}))
	if w.RTT > 0 {
		c.srv.Listener = &slowStartListener{Listener: c.srv.Listener, rtt: w.RTT}
	}
	c.srv.Start()
	c.Addr = strings.TrimPrefix(c.srv.URL, "http://")
	return c
}

// slowStartListener's connections wait one RTT before their first read:
// the TCP handshake a new connection to a distant registry costs.
type slowStartListener struct {
	net.Listener
	rtt time.Duration
}

func (l *slowStartListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &slowStartConn{Conn: c, rtt: l.rtt}, nil
}

type slowStartConn struct {
	net.Conn
	rtt  time.Duration
	once sync.Once
}

func (c *slowStartConn) Read(p []byte) (int, error) {
	c.once.Do(func() { time.Sleep(c.rtt) })
	return c.Conn.Read(p)
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
	c.evMu.Lock()
	c.events = nil
	c.evMu.Unlock()
	c.srv.CloseClientConnections()
}

// taken returns the requests recorded since the last reset.
func (c *counter) taken() []upEvent {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	return append([]upEvent(nil), c.events...)
}
