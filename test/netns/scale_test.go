package netns

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// linkRate is every host's link in the relay test, both ways (tc tbf):
// slow enough that the owner's uplink is the bottleneck of a star.
const linkRate = "100mbit"

// shape limits h's link both ways: its own eth0 (its uplink) and its port
// on the bridge (its downlink).
func (n *testNet) shape(t *testing.T, h host, name string) {
	t.Helper()
	for _, args := range [][]string{
		{"netns", "exec", h.ns, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", linkRate, "burst", "64kb", "latency", "400ms"},
		{"netns", "exec", n.bridge, "tc", "qdisc", "add", "dev", "v-" + name, "root", "tbf", "rate", linkRate, "burst", "64kb", "latency", "400ms"},
	} {
		n.ip(t, args...)
	}
}

// TestRelayTreeTwelveNodes runs twelve berth processes in their own
// namespaces on rate-limited links in front of a distribution registry.
// All twelve pull one cold blob at the same instant, once with the owner
// serving everyone (fan-out 11: the plan of before) and once down a relay
// tree of fan-out 2: every byte is verified, the upstream serves each blob
// once, and no node serves more than 2k copies at once. The wall times are
// logged side by side. Then an inner node of the tree is killed (SIGKILL)
// while the blob flows, and every other node still gets the right bytes.
func TestRelayTreeTwelveNodes(t *testing.T) {
	requireNetns(t)
	const count, k = 12, 2
	began := time.Now()
	step := func(msg string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), msg) }
	n := newNet(t)
	berth := buildBerth(t, n.dir)
	star, tree, kill := randomImage(t, 8<<20, 1), randomImage(t, 8<<20, 1), randomImage(t, 8<<20, 1)

	up := n.addHost(t, "up", 2)
	n.shape(t, up, "up")
	var hosts []host
	for i := range count {
		name := fmt.Sprintf("n%d", i)
		h := n.addHost(t, name, byte(11+i))
		n.shape(t, h, name)
		hosts = append(hosts, h)
	}
	reg := up.ip.String() + ":" + httpPort
	upl := n.helperProc(t, up, "upstream", "upstream", false,
		"-addr", reg, "-root", filepath.Join(n.dir, "upstream"),
		"-push", "team/star:v1="+writeLayout(t, n.dir, "star", star),
		"-push", "team/tree:v1="+writeLayout(t, n.dir, "tree", tree),
		"-push", "team/kill:v1="+writeLayout(t, n.dir, "kill", kill))
	upl.expect(t, "ready", 60*time.Second)
	step("upstream ready; links at " + linkRate)

	nodes := n.startCluster(t, berth, hosts, reg, "BERTH_PEERS_FANOUT="+strconv.Itoa(count-1))
	step("owner-star cluster formed (fan-out 11)")
	starWall := pullAtOnce(t, n, nodes, up, reg, "team/star", layerOf(t, star), nil, nil)
	step("owner star: cold pull at once in " + starWall.String())
	for _, nd := range nodes {
		nd.p.stop(10 * time.Second)
	}

	nodes = n.startCluster(t, berth, hosts, reg, "BERTH_PEERS_FANOUT="+strconv.Itoa(k))
	step("relay-tree cluster formed (fan-out 2)")
	treeWall := pullAtOnce(t, n, nodes, up, reg, "team/tree", layerOf(t, tree), nil, nil)
	step("relay tree: cold pull at once in " + treeWall.String())
	for _, nd := range nodes {
		if over := copiesOver(t, n, nd, 2*k); over != 0 {
			t.Errorf("%s served more than %d copies of a blob at once (%d blobs)", nd.name, 2*k, over)
		}
	}
	t.Logf("12 nodes, one cold 8 MiB blob, %s links: owner star %s, relay tree (k=%d) %s",
		linkRate, starWall.Round(time.Millisecond), k, treeWall.Round(time.Millisecond))

	// An inner node dies while the blob flows: the root's first child.
	layer := layerOf(t, kill)
	names := make([]string, len(nodes))
	for i, nd := range nodes {
		names[i] = nd.name
	}
	plan := peer.NewPlan(layer, names, -1, peer.PlanOptions{Fanout: k})
	victim := nodeNamed(nodes, plan.Nodes[plan.Children(0, plan.Root(0))[0]])
	if _, err := n.helper(t, up, 10*time.Second, "post", "http://"+reg+"/_test/hold"); err != nil {
		t.Fatal(err)
	}
	wall := pullAtOnce(t, n, nodes, up, reg, "team/kill", layer, &victim, func() {
		waitHeld(t, n, up, layer)
		t.Logf("killing %s, an inner node of the tree, mid-transfer", victim.name)
		_ = syscall.Kill(victim.p.Cmd.Process.Pid, syscall.SIGKILL) // ip netns exec execs: the pid is berth's
		if _, err := n.helper(t, up, 10*time.Second, "post", "http://"+reg+"/_test/release"); err != nil {
			t.Fatal(err)
		}
	})
	step("pull with an inner node killed mid-transfer: done in " + wall.String())
}

func layerOf(t *testing.T, img v1.Image) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, _ := layers[0].Digest()
	return d.String()
}

// pullAtOnce GETs blob d through every node but skip, released at the same
// instant, checks every byte and that the upstream served d once (twice at
// most with a node killed), and returns the time from release to the last
// verified byte. mid, if set, runs once the first bytes reached a client.
func pullAtOnce(t *testing.T, n *testNet, nodes []node, up host, reg, repo, d string, skip *node, mid func()) time.Duration {
	t.Helper()
	var pulls []*proc
	var on []node
	for _, nd := range nodes {
		if skip != nil && nd.name == skip.name {
			continue
		}
		p := n.helperProc(t, nd.host, "blob-"+repo[5:]+"-"+nd.name, "blob", true,
			"-armed", "-ns", reg, "-repo", repo, "-digest", d, "-first", strconv.Itoa(64<<10))
		p.expect(t, "armed", 30*time.Second)
		pulls, on = append(pulls, p), append(on, nd)
	}
	start := time.Now()
	for _, p := range pulls {
		if _, err := p.stdin.Write([]byte("go\n")); err != nil {
			t.Fatal(err)
		}
	}
	var once sync.Once
	for i, p := range pulls {
		if _, err := p.next("first ", 60*time.Second); err != nil {
			t.Fatalf("pull on %s: %v", on[i].name, err)
		}
		if mid != nil {
			once.Do(mid)
		}
	}
	for i, p := range pulls {
		_, err := p.next("ok ", 120*time.Second) // "ok" only once the bytes hash to d
		if err == nil {
			err = p.wait(10 * time.Second)
		}
		if err != nil {
			t.Fatalf("pull on %s: %v", on[i].name, err)
		}
	}
	wall := time.Since(start)
	want := 1
	if skip != nil {
		want = 2 // the killed node may have been fetching (for its children) from the root: its orphans' new parent resumes
	}
	if got := upstreamStateOf(t, n, up).blobGETs(d, ""); len(got) < 1 || len(got) > want {
		t.Errorf("upstream saw %d GETs of %s, want 1 (at most %d)", len(got), d, want)
	}
	return wall
}

// copiesOver scrapes nd's berth_peer_relay_copies_per_blob histogram and
// returns how many blobs it served more than limit copies of at once.
func copiesOver(t *testing.T, n *testNet, nd node, limit int) int {
	t.Helper()
	out, err := n.helper(t, nd.host, 10*time.Second, "get", nd.metricsURL())
	if err != nil {
		t.Fatal(err)
	}
	var count, within float64
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "berth_peer_relay_copies_per_blob_count":
			count = v
		case fmt.Sprintf(`berth_peer_relay_copies_per_blob_bucket{le="%d"}`, limit):
			within = v
		}
	}
	return int(count - within)
}
