package peers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
)

// upstream is a distribution registry in process behind a handler that
// counts requests and can hold blob bodies half way.
type upstream struct {
	*httptest.Server
	host string

	mu      sync.Mutex
	counts  map[string]int // "GET /v2/<name>/blobs/<digest>" -> requests
	gate    chan struct{}  // non-nil: blob bodies stop half way until closed
	halfway chan string    // receives the path of each blob body held half way
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	logrus.SetOutput(io.Discard)
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{"inmemory": configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}}
	cfg.Log.Level = "error"
	app := handlers.NewApp(context.Background(), cfg)
	u := &upstream{counts: map[string]int{}, halfway: make(chan string, 64)}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.Method+" "+r.URL.Path]++
		gate := u.gate
		u.mu.Unlock()
		if gate != nil && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			w = &gatedWriter{ResponseWriter: w, gate: gate, path: r.URL.Path, halfway: u.halfway}
		}
		app.ServeHTTP(w, r)
	}))
	u.host = strings.TrimPrefix(u.URL, "http://")
	t.Cleanup(u.Close)
	return u
}

// blobGETs returns the GETs of blob d (any repository).
func (u *upstream) blobGETs(d digest.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, c := range u.counts {
		if strings.HasPrefix(k, "GET ") && strings.HasSuffix(k, "/blobs/"+d.String()) {
			n += c
		}
	}
	return n
}

// holdBlobs makes blob bodies stop half way until release is called.
func (u *upstream) holdBlobs() (release func()) {
	ch := make(chan struct{})
	u.mu.Lock()
	u.gate = ch
	u.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.gate = nil
			u.mu.Unlock()
			close(ch)
		})
	}
}

type gatedWriter struct {
	http.ResponseWriter
	gate    chan struct{}
	path    string
	halfway chan string
	written int64
	held    bool
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	total := int64(0)
	fmt.Sscan(g.Header().Get("Content-Length"), &total)
	if !g.held && total > 0 && g.written+int64(len(p)) > total/2 {
		n := total/2 - g.written
		m, err := g.ResponseWriter.Write(p[:n])
		g.written += int64(m)
		if err != nil {
			return m, err
		}
		g.ResponseWriter.(http.Flusher).Flush()
		g.held = true
		g.halfway <- g.path
		<-g.gate
		m2, err := g.ResponseWriter.Write(p[n:])
		g.written += int64(m2)
		return m + m2, err
	}
	m, err := g.ResponseWriter.Write(p)
	g.written += int64(m)
	return m, err
}

func (g *gatedWriter) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{g}, src) // every byte through Write
}

func (u *upstream) push(t *testing.T, repo, tag string, img v1.Image) {
	t.Helper()
	ref, err := name.ParseReference(u.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
}

// node is one berth node: server.New's real wiring, served by a test
// http.Server so that the test can kill it or wrap its handler.
type node struct {
	name   string
	addr   string // HTTP host:port
	gossip string // gossip host:port
	srv    *server.Server
	hs     *http.Server
}

type nodeOpts struct {
	secret string                          // "" means the cluster's
	fanout int                             // peers.fanout; 0 means the default
	wrap   func(http.Handler) http.Handler // around the node's handler
}

// freeAddr returns a loopback address free a moment ago (gossip needs the
// port before the node starts, as every node names all seeds).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeSecret(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func testLog() *slog.Logger {
	if os.Getenv("BERTH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startCluster starts n nodes named n0.. that all name each other as
// seeds, and waits until each sees the others.
func startCluster(t *testing.T, up *upstream, n int, opts map[int]nodeOpts) []*node {
	t.Helper()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(t)
	}
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = startNode(t, up, fmt.Sprintf("n%d", i), gossip[i], gossip, opts[i])
	}
	waitPeers(t, nodes, n-1)
	return nodes
}

func startNode(t *testing.T, up *upstream, nodeName, gossip string, seeds []string, o nodeOpts) *node {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	secret := o.secret
	if secret == "" {
		secret = "the cluster secret"
	}
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen.Addr = ln.Addr().String()
	cfg.Cache.Dir = t.TempDir()
	cfg.Cache.GCInterval = 0
	cfg.Registries = []config.Registry{{Name: up.host, Endpoints: []string{up.URL}}}
	cfg.DefaultRegistry = ""
	cfg.ShutdownGrace = config.Duration(time.Second)
	cfg.Peers = config.Peers{
		Bind: gossip, Advertise: ln.Addr().String(), Join: seeds, SecretFile: writeSecret(t, secret),
		Timeout: config.Duration(2 * time.Second), AskNext: 2, NodeName: nodeName,
		RejoinInterval: config.Duration(time.Second), Fanout: o.fanout,
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := server.New(cfg, testLog())
	if err != nil {
		t.Fatalf("node %s: %v", nodeName, err)
	}
	h := srv.Handler()
	if o.wrap != nil {
		h = o.wrap(h)
	}
	nd := &node{name: nodeName, addr: ln.Addr().String(), gossip: gossip, srv: srv, hs: &http.Server{Handler: h}}
	done := make(chan struct{})
	go func() { defer close(done); _ = nd.hs.Serve(ln) }()
	t.Cleanup(func() {
		_ = nd.hs.Close()
		<-done
		_ = srv.Close()
	})
	return nd
}

// kill stops answering at once, like a crashed process: connections are
// cut and nothing new is accepted. (Gossip stays up until cleanup, so the
// others still rank it: the harder case.)
func (n *node) kill() { _ = n.hs.Close() }

// peers reads the node's berth_peers gauge.
func (n *node) peers(t *testing.T) int {
	t.Helper()
	mfs, err := n.srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "berth_peers" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return -1
}

func waitPeers(t *testing.T, nodes []*node, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range nodes {
		for n.peers(t) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d peers, want %d", n.name, n.peers(t), want)
			}
			time.Sleep(50 * time.Millisecond) // polling with a deadline
		}
	}
}

// owner returns the node that owns key among nodes.
func owner(nodes []*node, key string) *node {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.name
	}
	first := peer.Rank(key, names)[0]
	for _, n := range nodes {
		if n.name == first {
			return n
		}
	}
	return nil
}

// nsTransport adds containerd's ?ns=<registry> to every request.
type nsTransport struct {
	ns   string
	base http.RoundTripper
}

func (t nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ns", t.ns)
	r.URL.RawQuery = q.Encode()
	return t.base.RoundTrip(r)
}

func client(t *testing.T, ns string) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: nsTransport{ns: ns, base: tr}, Timeout: time.Minute}
}

// pull pulls repo:tag through n like a client: manifest, config and every
// layer, each checked against want's digests.
func pull(ctx context.Context, c *http.Client, n *node, repo, tag string, want v1.Image) error {
	ref, err := name.ParseReference(n.addr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithTransport(c.Transport), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	wantD, _ := want.Digest()
	if got, _ := img.Digest(); got != wantD {
		return fmt.Errorf("%s: manifest %s, want %s", n.name, got, wantD)
	}
	cfgName, _ := want.ConfigName()
	if err := getBlob(ctx, c, n, repo, digest.Digest(cfgName.String())); err != nil {
		return err
	}
	layers, _ := want.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if err := getBlob(ctx, c, n, repo, digest.Digest(d.String())); err != nil {
			return err
		}
	}
	return nil
}

// getBlob GETs blob d from n and checks its bytes.
func getBlob(ctx context.Context, c *http.Client, n *node, repo string, d digest.Digest) error {
	b, err := readBlob(ctx, c, n, repo, d, nil)
	if err != nil {
		return err
	}
	if got := sha(b); got != d {
		return fmt.Errorf("%s: blob %s: got %s", n.name, d, got)
	}
	return nil
}

// readBlob GETs blob d from n; first, if set, sees the body once some
// bytes have arrived.
func readBlob(ctx context.Context, c *http.Client, n *node, repo string, d digest.Digest, first func()) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.addr+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: blob %s: status %d", n.name, d, resp.StatusCode)
	}
	var buf []byte
	if first != nil {
		p := make([]byte, 1024)
		k, err := io.ReadFull(resp.Body, p)
		if err != nil {
			return nil, fmt.Errorf("%s: first bytes: %w", n.name, err)
		}
		buf = p[:k]
		first()
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", n.name, d, err)
	}
	return append(buf, rest...), nil
}

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.Digest("sha256:" + hex.EncodeToString(s[:]))
}

// stored checks that n's store holds d with the right bytes, or not at all.
func stored(n *node, d digest.Digest) (bool, error) {
	f, _, err := n.srv.Store().Open(d)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return true, err
	}
	if got := sha(b); got != d {
		return true, errors.New("store holds wrong bytes for " + d.String() + ": " + got.String())
	}
	return true, nil
}
