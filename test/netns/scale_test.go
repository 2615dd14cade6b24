package netns

import (
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// linkRate is every host's link in the relay test, both ways (tc htb):
// slow enough that the owner's uplink is the bottleneck of a star.
const linkRate, linkBits = "100mbit", 100e6

// shape limits h's link both ways: its own eth0 (its uplink) and its port
// on the bridge (its downlink). Each is an htb of linkRate whose small
// packets (under 1 KiB: TCP ACKs, request headers) go ahead of bulk data,
// which waits in a queue of at most 400 packets (about 50 ms). One FIFO
// for both (a tbf with a deep queue) held a node's ACKs for its download
// behind the data it uploads, up to the queue's whole delay, so a node
// that uploads at its link rate downloaded at a fraction of it: a full
// duplex port does not, and striping (every node uploads) paid for it
// most.
func (n *testNet) shape(t *testing.T, h host, name string) {
	t.Helper()
	for _, at := range [][]string{{"netns", "exec", h.ns, "tc"}, {"netns", "exec", n.bridge, "tc"}} {
		dev := "eth0"
		if at[2] == n.bridge {
			dev = "v-" + name
		}
		for _, args := range [][]string{
			{"qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20", "r2q", "100"},
			{"class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb", "rate", linkRate},
			{"class", "add", "dev", dev, "parent", "1:1", "classid", "1:10", "htb", "rate", "10mbit", "ceil", linkRate, "prio", "0"},
			{"class", "add", "dev", dev, "parent", "1:1", "classid", "1:20", "htb", "rate", "90mbit", "ceil", linkRate, "prio", "1"},
			{"qdisc", "add", "dev", dev, "parent", "1:20", "handle", "20:", "pfifo", "limit", "400"},
			// IPv4 total length under 1024: the small packets' class.
			{"filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "u16", "0x0000", "0xfc00", "at", "2", "flowid", "1:10"},
		} {
			n.ip(t, append(slices.Clone(at), args...)...)
		}
	}
}

// TestRelayTreeTwelveNodes runs twelve berth processes in their own
// namespaces on rate-limited links in front of a distribution registry.
// All twelve pull one cold blob at the same instant, three times in one
// run: with the owner serving everyone (fan-out 11, one stream: the plan
// of before), down one relay tree of fan-out 2 (one stream), and as two
// stripes each down its own tree of fan-out 2 (so every node uploads as
// well as downloads). Every byte is verified, the upstream sends each
// byte once (the striped pull in Range GETs: the owner's first bytes, then
// one per stripe), and no node
// serves more than 2k copies at once. The wall times are logged side by
// side. Then an inner node of a stripe's tree is killed (SIGKILL) while
// the stripes flow, and every other node still gets the right bytes.
func TestRelayTreeTwelveNodes(t *testing.T) {
	requireNetns(t)
	const count, k = 12, 2
	const stripeMin = 1 << 20
	began := time.Now()
	step := func(msg string) { t.Logf("%5.1fs %s", time.Since(began).Seconds(), msg) }
	n := newNet(t)
	berth := buildBerth(t, n.dir)
	// The compared pulls move a blob large enough that the links, not the
	// fills' start, set the time: at 100 Mbit/s one node's direct download
	// of 24 MiB takes 2 s, the star about 11 times that, one tree of
	// fan-out 2 about twice (each inner node's uplink feeds two children),
	// the striped trees about once (every node uploads about one blob).
	const blobSize = 24 << 20
	star, tree, striped := randomImage(t, blobSize, 1), randomImage(t, blobSize, 1), randomImage(t, blobSize, 1)
	kill := randomImage(t, 8<<20, 1)

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
		"-push", "team/striped:v1="+writeLayout(t, n.dir, "striped", striped),
		"-push", "team/kill:v1="+writeLayout(t, n.dir, "kill", kill))
	upl.expect(t, "ready", 60*time.Second)
	step("upstream ready; links at " + linkRate)
	stop := func(nodes []node) {
		for _, nd := range nodes {
			nd.p.stop(10 * time.Second)
		}
	}
	checkCopies := func(nodes []node) {
		for _, nd := range nodes {
			if over := copiesOver(t, n, nd, 2*k); over != 0 {
				t.Errorf("%s served more than %d copies of a blob at once (%d blobs)", nd.name, 2*k, over)
			}
		}
	}

	nodes := n.startCluster(t, berth, hosts, reg, "BERTH_PEERS_FANOUT="+strconv.Itoa(count-1), "BERTH_PEERS_STRIPE_SIZE=off")
	step("owner-star cluster formed (fan-out 11, one stream)")
	starWall := pullAtOnce(t, n, nodes, up, reg, "team/star", layerOf(t, star), blobSizes(t, star)[layerOf(t, star)], nil, nil, 0)
	step("owner star: cold pull at once in " + starWall.String())
	stop(nodes)

	nodes = n.startCluster(t, berth, hosts, reg, "BERTH_PEERS_FANOUT="+strconv.Itoa(k), "BERTH_PEERS_STRIPE_SIZE=off")
	step("relay-tree cluster formed (fan-out 2, one stream)")
	treeWall := pullAtOnce(t, n, nodes, up, reg, "team/tree", layerOf(t, tree), blobSizes(t, tree)[layerOf(t, tree)], nil, nil, 0)
	step("relay tree: cold pull at once in " + treeWall.String())
	checkCopies(nodes)
	stop(nodes)

	nodes = n.startCluster(t, berth, hosts, reg, "BERTH_PEERS_FANOUT="+strconv.Itoa(k), "BERTH_PEERS_STRIPE_SIZE="+strconv.Itoa(stripeMin))
	step("striped cluster formed (fan-out 2, stripes of 1 MiB or more)")
	stripedWall := pullAtOnce(t, n, nodes, up, reg, "team/striped", layerOf(t, striped), blobSizes(t, striped)[layerOf(t, striped)], nil, nil, 0)
	step("striped relay trees: cold pull at once in " + stripedWall.String())
	checkCopies(nodes)
	fills := 0.0
	for _, nd := range nodes {
		fills += metricSum(t, n, nd, "berth_fill_ranges_count")
	}
	if fills != count {
		t.Errorf("%v range fills over %d nodes, want one each", fills, count)
	}
	if gets := upstreamStateOf(t, n, up).blobGETs(layerOf(t, striped), ""); len(gets) != k+1 {
		t.Errorf("upstream saw %d GETs of the striped blob, want the owner's first bytes and one per stripe (%d): %+v", len(gets), k+1, gets)
	}
	bits := float64(blobSize * 8)
	direct := time.Duration(bits / linkBits * float64(time.Second))
	t.Logf("12 nodes, one cold %d MiB blob, %s links (one node's direct download %s): owner star %s (%.2f×), relay tree (k=%d) %s (%.2f×), striped relay trees (k=%d, %d stripes) %s (%.2f×)",
		blobSize>>20, linkRate, direct.Round(time.Millisecond), starWall.Round(time.Millisecond), starWall.Seconds()/direct.Seconds(),
		k, treeWall.Round(time.Millisecond), treeWall.Seconds()/direct.Seconds(),
		k, k, stripedWall.Round(time.Millisecond), stripedWall.Seconds()/direct.Seconds())

	// An inner node of stripe 0's tree dies while the stripes flow: the
	// root's first child. Its children resume the stripe at the byte
	// reached from the next node of the plan.
	layer := layerOf(t, kill)
	size := blobSizes(t, kill)[layer]
	names := make([]string, len(nodes))
	for i, nd := range nodes {
		names[i] = nd.name
	}
	plan := peer.NewPlan(layer, names, size, peer.PlanOptions{Fanout: k, StripeMin: stripeMin})
	if plan.Stripes() != k {
		t.Fatalf("the plan cuts the blob into %d stripes, want %d", plan.Stripes(), k)
	}
	vi := plan.Children(0, plan.Root(0))[0]
	victim := nodeNamed(nodes, plan.Nodes[vi])
	s0, e0 := plan.Range(0)
	extra := int64(subtree(plan, 0, vi)-1) * (e0 - s0) // at most its subtree goes upstream for the stripe
	if _, err := n.helper(t, up, 10*time.Second, "post", "http://"+reg+"/_test/hold"); err != nil {
		t.Fatal(err)
	}
	wall := pullAtOnce(t, n, nodes, up, reg, "team/kill", layer, size, &victim, func() {
		waitHeld(t, n, up, layer)
		t.Logf("killing %s, an inner node of stripe 0's tree, mid-transfer", victim.name)
		_ = syscall.Kill(victim.p.Cmd.Process.Pid, syscall.SIGKILL) // ip netns exec execs: the pid is berth's
		if _, err := n.helper(t, up, 10*time.Second, "post", "http://"+reg+"/_test/release"); err != nil {
			t.Fatal(err)
		}
	}, extra)
	step("striped pull with an inner node killed mid-transfer: done in " + wall.String())
}

// subtree counts node and its descendants in stripe s's tree.
func subtree(p *peer.Plan, s, node int) int {
	n := 1
	for _, c := range p.Children(s, node) {
		n += subtree(p, s, c)
	}
	return n
}

// metricSum scrapes nd's metrics and sums the samples named name (any
// labels).
func metricSum(t *testing.T, n *testNet, nd node, name string) float64 {
	t.Helper()
	out, err := n.helper(t, nd.host, 10*time.Second, "get", nd.metricsURL())
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		if series, _, _ := strings.Cut(f[0], "{"); series == name {
			v, _ := strconv.ParseFloat(f[1], 64)
			sum += v
		}
	}
	return sum
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
// instant, checks every byte and that the upstream sent each byte of d
// once (at most extra bytes more, with a node killed), and returns the time
// from release to the last verified byte. mid, if set, runs once the first
// bytes reached a client.
func pullAtOnce(t *testing.T, n *testNet, nodes []node, up host, reg, repo, d string, size int64, skip *node, mid func(), extra int64) time.Duration {
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
	var sent int64
	for _, r := range upstreamStateOf(t, n, up).blobGETs(d, "") {
		sent += r.Bytes
	}
	if sent < size || sent > size+extra {
		t.Errorf("upstream sent %d bytes of %s (%d bytes), want each byte once (at most %d more)", sent, d, size, extra)
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
