package netns

import (
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	httpPort   = "5000" // every host is alone in its namespace: fixed ports cannot collide
	adminPort  = "5001" // the default admin.addr, on 127.0.0.1 of the node's namespace
	gossipPort = "7946"
)

// node is one berth process in its namespace.
type node struct {
	host
	name string
	p    *proc
}

func (nd node) metricsURL() string { return "http://127.0.0.1:" + adminPort + "/metrics" }

// TestClusterAcrossNamespaces runs three berth processes, each in its own
// namespace, in front of a distribution registry in a fourth; a bridge in
// a fifth joins them. All three pull a multi-layer image cold at once and
// the upstream must see each blob GET once. Then, while a node streams a
// large layer from its owner, the owner's link goes down: the pull must
// still complete with the right bytes, resumed upstream at the byte reached.
func TestClusterAcrossNamespaces(t *testing.T) {
	requireNetns(t)
	began := time.Now()
	step := func(msg string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), msg) }
	n := newNet(t)
	berth := buildBerth(t, n.dir)
	app := randomImage(t, 1<<20, 6)
	big := randomImage(t, 8<<20, 1)

	up := n.addHost(t, "up", 2)
	var hosts []host
	for i := range 3 {
		hosts = append(hosts, n.addHost(t, fmt.Sprintf("n%d", i), byte(11+i)))
	}
	reg := up.ip.String() + ":" + httpPort // the registry's name, as containerd's ns= names it
	step("images made")
	upl := n.helperProc(t, up, "upstream", "upstream", false,
		"-addr", reg, "-root", filepath.Join(n.dir, "upstream"),
		"-push", "team/app:v1="+writeLayout(t, n.dir, "app", app),
		"-push", "team/big:v1="+writeLayout(t, n.dir, "big", big))
	upl.expect(t, "ready", 60*time.Second)
	step("upstream ready at " + reg)

	nodes := n.startCluster(t, berth, hosts, reg)
	step("cluster formed: every node sees two peers")
	coldPullAtOnce(t, n, nodes, up, reg, app)
	step("cold pull at once: each blob fetched upstream once")
	linkDownMidPull(t, n, nodes, up, reg, big)
	step("pull survived the owner's link going down")
}

// startCluster starts one berth per host, every one naming all as seeds,
// and waits until each sees the two others.
func (n *testNet) startCluster(t *testing.T, bin string, hosts []host, reg string, env ...string) []node {
	t.Helper()
	secret := filepath.Join(n.dir, "peer-secret")
	if err := os.WriteFile(secret, []byte("netns test secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var seeds []string
	for _, h := range hosts {
		seeds = append(seeds, h.ip.String()+":"+gossipPort)
	}
	var nodes []node
	for i, h := range hosts {
		nd := node{host: h, name: fmt.Sprintf("n%d", i)}
		dir := filepath.Join(n.dir, nd.name)
		cfg := writeConfig(t, dir, reg)
		nd.p = n.start(t, h, "berth-"+nd.name,
			// A 2s time to a peer's first byte, not 500ms, as in test/peers: a
			// race-built berth on a loaded machine may answer later, and the
			// asker would then rightly go upstream itself.
			append([]string{"BERTH_PEERS_NODE_NAME=" + nd.name, "BERTH_PEERS_TIMEOUT=2s", "BERTH_PEERS_IDLE_TIMEOUT=5s", "BERTH_SHUTDOWN_GRACE=1s"}, env...), false, bin, "serve",
			"--config", cfg, "--addr", "0.0.0.0:"+httpPort, "--cache-dir", filepath.Join(dir, "cache"),
			"--registry", reg+"=http://"+reg, "--default-registry", reg,
			"--peer-bind", h.ip.String()+":"+gossipPort, "--peer-advertise", h.ip.String()+":"+httpPort,
			"--peer-join", strings.Join(seeds, ","), "--peer-secret-file", secret, "--log-level", "debug")
		nodes = append(nodes, nd)
	}
	waitPeers(t, n, nodes, len(nodes)-1)
	return nodes
}

// waitPeers waits until every node's berth_peers gauge reads want.
func waitPeers(t *testing.T, n *testNet, nodes []node, want int) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() {
			_, errs[i] = n.helper(t, nd.host, 40*time.Second, "wait",
				"-url", nd.metricsURL(), "-line", "berth_peers "+strconv.Itoa(want), "-timeout", "30s")
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("cluster not formed: %v", err)
	}
}

// coldPullAtOnce has every node pull app, released at the same moment,
// and checks the bytes and that the upstream saw each blob GET once.
func coldPullAtOnce(t *testing.T, n *testNet, nodes []node, up host, reg string, app v1.Image) {
	t.Helper()
	var pulls []*proc
	for _, nd := range nodes {
		p := n.helperProc(t, nd.host, "pull-"+nd.name, "pull", true, "-ns", reg, "-ref", "team/app:v1")
		p.expect(t, "armed", 30*time.Second)
		pulls = append(pulls, p)
	}
	armed := time.Now()
	for _, p := range pulls { // all at once: each client waits for this line
		if _, err := p.stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	want := blobSizes(t, app)
	wantManifest, _ := app.Digest()
	for i, p := range pulls {
		l, err := p.next("result ", 60*time.Second)
		if err == nil {
			err = p.wait(10 * time.Second)
		}
		if err != nil {
			t.Fatalf("pull on %s: %v", nodes[i].name, err)
		}
		var res pullResult
		if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "result ")), &res); err != nil {
			t.Fatal(err)
		}
		if res.Manifest != wantManifest.String() || !maps.Equal(res.Blobs, want) {
			t.Errorf("%s pulled manifest %s blobs %v; want %s %v", nodes[i].name, res.Manifest, res.Blobs, wantManifest, want)
		}
	}
	t.Logf("three pulls took %s once armed", time.Since(armed).Round(time.Millisecond))
	st := upstreamStateOf(t, n, up)
	for d := range want {
		if got := st.blobGETs(d, ""); len(got) != 1 {
			t.Errorf("upstream saw %d GETs of %s, want exactly 1: %+v", len(got), d, got)
		}
	}
}

// linkDownMidPull pulls big's layer on a node that is not its owner, holds
// the upstream's body half way (so bytes are streaming owner -> asker ->
// client), takes the owner's link down, releases the upstream, and checks
// that the client still ends with the right bytes, resumed upstream by the
// asker at a byte past zero.
func linkDownMidPull(t *testing.T, n *testNet, nodes []node, up host, reg string, big v1.Image) {
	t.Helper()
	layers, _ := big.Layers()
	ld, _ := layers[0].Digest()
	layer := ld.String()
	size, _ := layers[0].Size()
	names := []string{nodes[0].name, nodes[1].name, nodes[2].name}
	ranked := peer.Rank(layer, names)
	owner, asker := nodeNamed(nodes, ranked[0]), nodeNamed(nodes, ranked[1])
	upURL := "http://" + reg
	if _, err := n.helper(t, up, 10*time.Second, "post", upURL+"/_test/hold"); err != nil {
		t.Fatal(err)
	}
	p := n.helperProc(t, asker.host, "blob-"+asker.name, "blob", false,
		"-ns", reg, "-repo", "team/big", "-digest", layer, "-first", strconv.Itoa(64<<10))
	p.expect(t, "first ", 30*time.Second)
	held := waitHeld(t, n, up, layer)
	if held.Remote != owner.ip.String() {
		t.Fatalf("the upstream holds a body for %s, want the owner %s (%s): the asker did not go through its owner",
			held.Remote, owner.name, owner.ip)
	}
	t.Logf("%s streams %s from its owner %s; taking %s's link down", asker.name, layer, owner.name, owner.name)
	if out, err := n.exec(t, owner.host, 10*time.Second, nil, "ip", "link", "set", "eth0", "down"); err != nil {
		t.Fatalf("link down: %v %s", err, out)
	}
	if _, err := n.helper(t, up, 10*time.Second, "post", upURL+"/_test/release"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	l, err := p.next("ok ", 90*time.Second)
	if err == nil {
		err = p.wait(10 * time.Second)
	}
	if err != nil {
		t.Fatalf("pull on %s after %s's link went down: %v", asker.name, owner.name, err)
	}
	if l != "ok "+strconv.FormatInt(size, 10) {
		t.Fatalf("pull printed %q, want ok %d", l, size)
	}
	t.Logf("pull completed %s after the link went down", time.Since(start).Round(time.Millisecond))
	st := upstreamStateOf(t, n, up)
	var resumed bool
	for _, r := range st.blobGETs(layer, asker.ip.String()) {
		off, ok := rangeStart(r.Range)
		if !ok || off == 0 {
			t.Errorf("%s fetched %s upstream from the start (Range %q), not resumed", asker.name, layer, r.Range)
		}
		resumed = resumed || off > 0
	}
	if !resumed {
		t.Errorf("%s never resumed %s upstream; upstream GETs: %+v", asker.name, layer, st.blobGETs(layer, ""))
	}
	waitPeers(t, n, []node{asker}, 1) // and the dead link's node drops out
}

// waitHeld polls the upstream until it holds a body of blob d half way.
func waitHeld(t *testing.T, n *testNet, up host, d string) request {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range upstreamStateOf(t, n, up).Held {
			if strings.HasSuffix(r.Path, "/blobs/"+d) {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
	t.Fatalf("the upstream never held a body of %s", d)
	return request{}
}

func upstreamStateOf(t *testing.T, n *testNet, up host) upstreamState {
	t.Helper()
	out, err := n.helper(t, up, 10*time.Second, "get", "http://"+up.ip.String()+":"+httpPort+"/_test/state")
	if err != nil {
		t.Fatal(err)
	}
	var st upstreamState
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("upstream state: %v", err)
	}
	return st
}

// blobGETs returns the GETs of blob d, from remote only unless it is "".
func (s upstreamState) blobGETs(d, remote string) []request {
	var out []request
	for _, r := range s.Requests {
		if r.Method == "GET" && strings.HasSuffix(r.Path, "/blobs/"+d) && (remote == "" || r.Remote == remote) {
			out = append(out, r)
		}
	}
	return out
}

// rangeStart parses "bytes=N-" or "bytes=N-M"; no Range starts at 0.
func rangeStart(h string) (int64, bool) {
	if h == "" {
		return 0, true
	}
	s, ok := strings.CutPrefix(h, "bytes=")
	s, _, ok2 := strings.Cut(s, "-")
	n, err := strconv.ParseInt(s, 10, 64)
	return n, ok && ok2 && err == nil
}

func nodeNamed(nodes []node, name string) node {
	for _, nd := range nodes {
		if nd.name == name {
			return nd
		}
	}
	panic("no node " + name)
}

// writeConfig writes a config file naming only the test's registry, so a
// misrouted request fails instead of leaving the namespace.
func writeConfig(t *testing.T, dir, reg string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "berth.yaml")
	cfg := fmt.Sprintf("defaultRegistry: %q\nregistries:\n  - name: %q\n    endpoints: [\"http://%s\"]\n", reg, reg, reg)
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// randomImage builds an image of layers random, incompressible layers of
// layerSize bytes each, stored as they are (no gzip: fast under -race).
func randomImage(t *testing.T, layerSize int64, layers int) v1.Image {
	t.Helper()
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		t.Fatal(err)
	}
	rng := rand.NewChaCha8(seed)
	var ls []v1.Layer
	for range layers {
		b := make([]byte, layerSize)
		_, _ = rng.Read(b)
		ls = append(ls, static.NewLayer(b, types.OCIUncompressedLayer))
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes img as an OCI layout under dir/name for the upstream
// to push to itself.
func writeLayout(t *testing.T, dir, name string, img v1.Image) string {
	t.Helper()
	p, err := layout.Write(filepath.Join(dir, "layout-"+name), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	return string(p)
}

// blobSizes returns the config and layer digests of img with their sizes.
func blobSizes(t *testing.T, img v1.Image) map[string]int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{m.Config.Digest.String(): m.Config.Size}
	for _, l := range m.Layers {
		out[l.Digest.String()] = l.Size
	}
	return out
}
