package security

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/test/upstreamtest"
)

const clusterSecret = "0123456789abcdef0123456789abcdef"

// rogue is a cluster member that holds the secret and lies: its registry
// API answers every tag with the planted manifest, and nothing else.
type rogue struct {
	cluster *peer.Cluster
	http    *httptest.Server
	tagAsks atomic.Int64 // manifest requests by tag it got
	asks    atomic.Int64 // every request it got
}

// startRogue joins a member named name to the cluster at seed. Its HTTP
// API listens on listen (host:port; port 0 picks one) and it advertises
// advertise ("" means its API's own address).
func startRogue(t *testing.T, name, seed, listen, advertise string, planted digest.Digest, plantedType string, plantedRaw []byte) *rogue {
	t.Helper()
	r := &rogue{}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	r.http = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.asks.Add(1)
		i := strings.LastIndex(req.URL.Path, "/manifests/")
		if i < 0 {
			http.NotFound(w, req)
			return
		}
		if _, err := digest.Parse(req.URL.Path[i+len("/manifests/"):]); err != nil {
			r.tagAsks.Add(1)
		}
		w.Header().Set("Content-Type", plantedType)
		w.Header().Set("Docker-Content-Digest", planted.String())
		w.Header().Set("Content-Length", strconv.Itoa(len(plantedRaw)))
		if req.Method == http.MethodGet {
			_, _ = w.Write(plantedRaw)
		}
	}))
	r.http.Listener.Close()
	r.http.Listener = ln
	r.http.Start()
	t.Cleanup(r.http.Close)
	if advertise == "" {
		advertise = ln.Addr().String()
	}
	c, err := peer.Start(context.Background(), peer.Config{
		NodeName: name, Bind: "127.0.0.1:0", Advertise: advertise, Join: []string{seed},
		Secret: []byte(clusterSecret), RejoinInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.cluster = c
	t.Cleanup(func() { _ = c.Close(5 * time.Second) })
	deadline := time.Now().Add(30 * time.Second)
	for !c.Ready() || len(c.Members()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rogue %s did not join the cluster at %s", name, seed)
		}
		time.Sleep(50 * time.Millisecond) // polling gossip
	}
	return r
}

// peersGauge reads berth_peers from b's metrics (-1: none).
func (b *berth) peersGauge(t *testing.T) int {
	t.Helper()
	if n, v := series(b.scrape(t), "berth_peers"); n > 0 {
		return int(v)
	}
	return -1
}

func (b *berth) waitPeers(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for b.peersGauge(t) != want {
		if time.Now().After(deadline) {
			t.Fatalf("berth_peers is %d after 30s, want %d", b.peersGauge(t), want)
		}
		time.Sleep(100 * time.Millisecond) // polling another process
	}
}

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startPeerBerth runs a berth node named "berth" in a cluster of its own,
// with up as its registry, and returns it and its gossip address.
func startPeerBerth(t *testing.T, up *upstreamtest.Registry, extra map[string]any) (*berth, string) {
	t.Helper()
	gossip := freeAddr(t)
	peers := map[string]any{"bind": gossip, "secretFile": writeSecret(t, clusterSecret), "nodeName": "berth",
		"rejoinInterval": "0s"}
	for k, v := range extra {
		peers[k] = v
	}
	// advertise needs the HTTP address, which startBerth picks: take one
	// here and pass it as listen.addr through the same map.
	addr := freeAddr(t)
	peers["advertise"] = addr
	cfg := map[string]any{
		"tagTTL":          "1ms",
		"defaultRegistry": up.Host,
		"registries":      []any{map[string]any{"name": up.Host, "endpoints": []string{up.URL}}},
		"peers":           peers,
	}
	b := startBerthAt(t, addr, cfg)
	return b, gossip
}

// TestRogueMember: what a member holding the cluster secret may make berth do.
func TestRogueMember(t *testing.T) {
	up := upstreamtest.New(t)
	genuine, planted := randomImage(t, 512), randomImage(t, 512)
	genuineDigest, _, _ := manifestOf(t, genuine)
	plantedDigest, plantedType, plantedRaw := manifestOf(t, planted)
	up.Push(t, "planted/app", "v1", planted)
	b, gossip := startPeerBerth(t, up, map[string]any{"resolveTags": false})
	closeConns := func() { up.CloseClientConnections() }

	r := startRogue(t, "rogue", gossip, "127.0.0.1:0", "", plantedDigest, plantedType, plantedRaw)
	b.waitPeers(t, 1)
	warm := pushed(t, up, "warm/app", "v1", randomImage(t, 1024))
	pullImage(t, b, "warm/app", digestOf(t, warm), up.Host, warm) // by digest: tags are the rogue's game
	closeConns()
	b.settle(t, usage{Goroutines: 1 << 20, FDs: 1 << 20}, closeConns)
	base := b.usage(t)

	// With peers.resolveTags off, a node resolves every tag itself, even
	// those the rogue owns in the cluster's ranking.
	t.Run("tags are not taken from peers", func(t *testing.T) {
		var tags []string
		for i := 0; len(tags) < 3 && i < 1000; i++ {
			tag := "t" + strconv.Itoa(i)
			if peer.Rank(up.Host+"/app/web:"+tag, []string{"berth", "rogue"})[0] == "rogue" {
				tags = append(tags, tag)
				up.Push(t, "app/web", tag, genuine)
			}
		}
		for _, tag := range tags {
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				a := b.get(t, method, "app/web/manifests/"+tag, up.Host)
				if got := a.Header.Get("Docker-Content-Digest"); a.Status != http.StatusOK || got != genuineDigest.String() {
					t.Errorf("%s app/web:%s: %d %s, want the upstream's %s (the rogue plants %s)", method, tag, a.Status, got, genuineDigest, plantedDigest)
				}
			}
		}
		if n := r.tagAsks.Load(); n != 0 {
			t.Errorf("berth asked the rogue to resolve %d tags with peers.resolveTags off", n)
		}
		b.settle(t, base, closeConns)
	})

	// A member whose advertised HTTP address is on another host than its
	// gossip address is not used: berth sends nothing to that address.
	t.Run("foreign HTTP address", func(t *testing.T) {
		vln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatalf("listen on 127.0.0.2 (all of 127/8 is loopback on Linux): %v", err)
		}
		victim := newMetadataOn(t, vln) // the service the rogue points berth at
		_ = startRogue(t, "rogue2", gossip, "127.0.0.1:0", vln.Addr().String(), plantedDigest, plantedType, plantedRaw)
		if n := b.peersGauge(t); n != 1 {
			t.Errorf("berth counts %d peers, want 1: the member advertising %s for gossip from 127.0.0.1 was accepted", n, vln.Addr())
		}
		// Pull an image whose blobs the second rogue would own.
		var img = randomImage(t, 2048)
		for i := 0; ; i++ {
			d := layerDigest(t, img)
			if peer.Rank(d.String(), []string{"berth", "rogue", "rogue2"})[0] == "rogue2" {
				break
			}
			if i > 100 {
				t.Fatal("no layer ranked to rogue2")
			}
			img = randomImage(t, 2048)
		}
		pullImage(t, b, "victim/app", digestOf(t, img), up.Host, pushed(t, up, "victim/app", "v1", img))
		if n := victim.hits.Load(); n != 0 {
			t.Errorf("berth sent %d requests to the address a member advertised for another host", n)
		}
		b.settle(t, base, closeConns)
	})
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, _, _ := manifestOf(t, img)
	return d.String()
}

// pushed pushes img as repo:tag and returns it.
func pushed(t *testing.T, up *upstreamtest.Registry, repo, tag string, img v1.Image) v1.Image {
	t.Helper()
	up.Push(t, repo, tag, img)
	return img
}

// TestPeerSecret: a cluster secret that is empty or short is refused by
// `berth config validate` and by `berth serve`.
func TestPeerSecret(t *testing.T) {
	bin := needBerth(t)
	for _, secret := range []string{"", "\n", "short-secret\n"} {
		dir := t.TempDir()
		path := filepath.Join(dir, "berth.yaml")
		writeYAML(t, path, map[string]any{
			"listen": map[string]any{"addr": freeAddr(t)},
			"admin":  map[string]any{"addr": freeAddr(t)},
			"cache":  map[string]any{"dir": filepath.Join(dir, "cache")},
			"peers": map[string]any{"bind": freeAddr(t), "advertise": "127.0.0.1:5000",
				"secretFile": writeSecret(t, secret)},
		})
		for _, args := range [][]string{{"config", "validate", path}, {"serve", "--config", path}} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			timedOut := ctx.Err() != nil
			cancel()
			if err == nil || timedOut || !strings.Contains(string(out), "peers.secretFile") {
				t.Errorf("berth %s with a %d-byte secret: %v, output %q; want a refusal naming peers.secretFile", args[0], len(secret), err, out)
			}
		}
	}
}
