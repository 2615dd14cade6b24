package peers

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/opencontainers/go-digest"
)

// stripeOpts gives n nodes fan-out k and a 256 KiB smallest stripe, so a
// 4 MiB blob is fetched as k stripes.
func stripeOpts(n, k int) map[int]nodetest.Member {
	o := map[int]nodetest.Member{}
	for i := range n {
		o[i] = nodetest.Member{Mutate: func(c *config.Config) { c.Peers.Fanout, c.Peers.StripeSize = k, "256KiB" }}
	}
	return o
}

// pushLayer pushes team/app:v1, a cold image of one 4 MiB random layer,
// and returns that layer's digest and size.
func pushLayer(t *testing.T, up *upstreamtest.Registry) (digest.Digest, int64) {
	t.Helper()
	_, d, size := up.PushLayer(t, "team/app", 4<<20)
	return digest.Digest(d.String()), size
}

func stripePlan(nodes []*node, d digest.Digest, size int64, k int) *peer.Plan {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return peer.NewPlan(d.String(), names, size, peer.PlanOptions{Fanout: k, StripeMin: 256 << 10})
}

// counter sums a counter's series on n whose labels contain label.
func counter(t *testing.T, n *node, name, label string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || strings.Contains(m.String(), label) {
				if c := m.GetCounter(); c != nil {
					sum += c.GetValue()
				}
				if h := m.GetHistogram(); h != nil {
					sum += float64(h.GetSampleCount())
				}
			}
		}
	}
	return sum
}

// TestStripedRelayFetchesEachByteOnce: seven nodes with fan-out 2 pull a
// cold 4 MiB blob at once. Each node fetches it as two stripes, each from
// its parent in that stripe's tree; the upstream serves each stripe's
// range once (each byte once: the owner's first bytes, then one Range GET
// per stripe), every node stores the
// right bytes, and no node serves more than 2k copies at once.
func TestStripedRelayFetchesEachByteOnce(t *testing.T) {
	const n, k = 7, 2
	up := upstreamtest.New(t)
	layer, size := pushLayer(t, up)
	nodes := startCluster(t, up, n, stripeOpts(n, k))

	began := time.Now()
	for name, err := range pullAll(t, up, nodes, "team/app", layer, nil, nil) {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	t.Logf("%d nodes pulled a %d-byte blob as %d stripes in %s", n, size, k, time.Since(began).Round(time.Millisecond))
	plan := stripePlan(nodes, layer, size, k)
	if plan.Stripes() != k {
		t.Fatalf("plan has %d stripes, want %d", plan.Stripes(), k)
	}
	if got, ranges := up.BlobBytes(layer.String()); got != size {
		t.Errorf("upstream sent %d bytes of the layer, want %d (each byte once); ranges %q", got, size, ranges)
	}
	if got := up.AnyBlobGETs(layer.String()); got != k+1 {
		t.Errorf("upstream saw %d GETs of the layer, want the owner's first bytes and one per stripe (%d)", got, k+1)
	}
	ranged := 0.0
	for _, nd := range nodes {
		if ok, err := stored(nd, layer); !ok || err != nil {
			t.Errorf("%s stored the layer: %v, %v", nd.Name, ok, err)
		}
		if _, over := relayCopies(t, nd, 2*k); over > 0 {
			t.Errorf("%s served more than %d copies of a blob at once", nd.Name, 2*k)
		}
		if got := counter(t, nd, "berth_fill_ranges", ""); got != 1 {
			t.Errorf("%s: %v range fills, want 1", nd.Name, got)
		}
		ranged += counter(t, nd, "berth_peer_relay_stripe_copies_total", "")
	}
	// Every node but the k roots fetched k stripes from peers; a stripe's
	// root fetched its own from the upstream.
	if want := float64(n*k - k); ranged < want {
		t.Errorf("%v stripe copies served to peers, want at least %v", ranged, want)
	}
}

// TestStripedRelaySlowRootSendsNoStripeUpstreamTwice: seven nodes with
// fan-out 2 and a 2 s peers.idleTimeout pull a cold 4 MiB blob at once
// while the upstream holds every stripe root's Range GET half way for 3 s:
// each root is slow, not dead (alive, still fetching), and its children's
// streams from it send nothing for longer than the idle timeout. They ask
// the root again rather than the upstream, so the upstream still sends
// each byte once (a child that passed over its slow root for the upstream
// made it send that stripe again).
func TestStripedRelaySlowRootSendsNoStripeUpstreamTwice(t *testing.T) {
	const n, k = 7, 2
	const idle, hold = 2 * time.Second, 3 * time.Second
	up := upstreamtest.New(t)
	layer, size := pushLayer(t, up)
	opts := stripeOpts(n, k)
	for i, m := range opts {
		mutate := m.Mutate
		m.Mutate = func(c *config.Config) { mutate(c); c.Peers.IdleTimeout = config.Duration(idle) }
		opts[i] = m
	}
	nodes := startCluster(t, up, n, opts)

	release := up.GateRanges()
	defer release()
	go func() {
		held := 0
		for held < k {
			select {
			case <-up.Halfway():
				held++
			case <-t.Context().Done():
				return
			}
		}
		time.Sleep(hold) // the roots are slow: that is the test
		release()
	}()
	for name, err := range pullAll(t, up, nodes, "team/app", layer, nil, nil) {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if held := len(up.HeldRequests()); held < k {
		t.Fatalf("the upstream held %d stripe GETs, want %d", held, k)
	}
	if got, ranges := up.BlobBytes(layer.String()); got != size {
		t.Errorf("upstream sent %d bytes of the layer, want %d (each byte once); ranges %q", got, size, ranges)
	}
	for _, nd := range nodes {
		if ok, err := stored(nd, layer); !ok || err != nil {
			t.Errorf("%s stored the layer: %v, %v", nd.Name, ok, err)
		}
	}
}

// TestStripedRelayParentKilledMidTransfer kills an inner node of a
// stripe's tree while the stripes flow: its children resume that stripe at
// the byte reached from the next source of the plan, every other node gets
// the right bytes, and the upstream sends the stripe again for at most the
// victim's subtree (a slow answer under load may send an orphan upstream).
func TestStripedRelayParentKilledMidTransfer(t *testing.T) {
	const n, k = 7, 2
	up := upstreamtest.New(t)
	layer, size := pushLayer(t, up)
	nodes := startCluster(t, up, n, stripeOpts(n, k))
	plan := stripePlan(nodes, layer, size, k)
	// The first child of stripe 1's root: an inner node of that tree.
	victimIdx := plan.Children(1, plan.Root(1))[0]
	var victim *node
	for _, nd := range nodes {
		if nd.Name == plan.Nodes[victimIdx] {
			victim = nd
		}
	}
	below := subtree(plan, 1, victimIdx) - 1
	if below == 0 {
		t.Fatalf("%s has no children in stripe 1's tree", victim.Name)
	}

	pullKillingMidTransfer(t, up, nodes, layer, victim, 2*k)
	// A dead node sends at most its own subtree upstream for its stripe.
	start, end := plan.Range(1)
	got, ranges := up.BlobBytes(layer.String())
	if most := size + int64(below)*(end-start); got > most {
		t.Errorf("upstream sent %d bytes of the layer, want at most %d (the stripe again for each of the victim's %d descendants); ranges %q", got, most, below, ranges)
	}
}

// subtree counts node and its descendants in stripe s's tree.
func subtree(p *peer.Plan, s, node int) int {
	n := 1
	for _, c := range p.Children(s, node) {
		n += subtree(p, s, c)
	}
	return n
}
