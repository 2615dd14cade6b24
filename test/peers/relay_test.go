package peers

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/opencontainers/go-digest"
)

// relayCopies reads n's berth_peer_relay_copies_per_blob histogram: how
// many blobs it served to peers, and how many of those at some moment had
// more than limit copies going at once.
func relayCopies(t *testing.T, n *node, limit float64) (blobs, over uint64) {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "berth_peer_relay_copies_per_blob" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		blobs = h.GetSampleCount()
		within := uint64(0)
		for _, b := range h.GetBucket() {
			if b.GetUpperBound() == limit {
				within = b.GetCumulativeCount()
			}
		}
		return blobs, blobs - within
	}
	return 0, 0
}

// relayPlan is the plan every node computes for d.
func relayPlan(nodes []*node, d digest.Digest, fanout int) *peer.Plan {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return peer.NewPlan(d.String(), names, -1, peer.PlanOptions{Fanout: fanout})
}

func fanoutOpts(n, k int) map[int]nodetest.Member {
	o := map[int]nodetest.Member{}
	for i := range n {
		o[i] = nodetest.Member{Mutate: func(c *config.Config) { c.Peers.Fanout = k }}
	}
	return o
}

// pullAll pulls blob d through every node but skip at the same instant and
// returns the errors by node name.
func pullAll(t *testing.T, up *upstreamtest.Registry, nodes []*node, repo string, d digest.Digest, skip *node, first func()) map[string]error {
	t.Helper()
	c := client(t, up.Host)
	start := make(chan struct{})
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	var once sync.Once
	for _, n := range nodes {
		if n == skip {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			b, err := readBlob(t.Context(), c, n, repo, d, func() {
				if first != nil {
					once.Do(first)
				}
			})
			if err == nil && sha(b) != d {
				err = fmt.Errorf("%s: %d bytes hashing to %s", n.Name, len(b), sha(b))
			}
			mu.Lock()
			errs[n.Name] = err
			mu.Unlock()
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// TestRelayTreeBoundsCopies: nine nodes with fan-out 2 pull one cold blob
// at once. The upstream serves it once and no node serves more than 2k
// copies of it at once (the owner alone would serve eight).
func TestRelayTreeBoundsCopies(t *testing.T) {
	const n, k = 9, 2
	up := upstreamtest.New(t)
	layer, _ := pushLayer(t, up)
	nodes := startCluster(t, up, n, fanoutOpts(n, k))

	for name, err := range pullAll(t, up, nodes, "team/app", layer, nil, nil) {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if got := up.AnyBlobGETs(layer.String()); got != 1 {
		t.Errorf("upstream saw %d GETs of the layer, want 1", got)
	}
	plan := relayPlan(nodes, layer, k)
	served := 0
	for _, nd := range nodes {
		if ok, err := stored(nd, layer); !ok || err != nil {
			t.Errorf("%s stored the layer: %v, %v", nd.Name, ok, err)
		}
		blobs, over := relayCopies(t, nd, 2*k)
		if over > 0 {
			t.Errorf("%s served more than %d copies of a blob at once", nd.Name, 2*k)
		}
		served += int(blobs)
		if nd.Name == plan.Nodes[plan.Root(0)] && blobs == 0 {
			t.Errorf("the root %s served no copies: the plan was not followed", nd.Name)
		}
	}
	if served < 3 {
		t.Errorf("%d nodes relayed the blob, want the tree's inner nodes (at least 3)", served)
	}
}

// TestRelayParentKilledMidTransfer kills an inner node of the tree while
// the blob flows: its children resume from another node of the plan, every
// other node gets the right bytes, and the upstream serves at most one
// more stream.
func TestRelayParentKilledMidTransfer(t *testing.T) {
	const n, k = 9, 2
	up := upstreamtest.New(t)
	layer, _ := pushLayer(t, up)
	opts := fanoutOpts(n, k)
	for i := range opts {
		// A live parent's first byte can take seconds on a loaded machine;
		// only the kill may send a child elsewhere (its connection is cut).
		opts[i] = nodetest.Member{Mutate: func(c *config.Config) { c.Peers.Fanout, c.Peers.Timeout = k, config.Duration(20*time.Second) }}
	}
	nodes := startCluster(t, up, n, opts)
	plan := relayPlan(nodes, layer, k)
	// The root's first child: an inner node with children of its own.
	victimName := plan.Children(0, plan.Root(0))[0]
	var victim *node
	for _, nd := range nodes {
		if nd.Name == plan.Nodes[victimName] {
			victim = nd
		}
	}
	if len(plan.Children(0, victimName)) == 0 {
		t.Fatalf("%s has no children in the plan", victim.Name)
	}

	pullKillingMidTransfer(t, up, nodes, layer, victim, 2*k)
	if got := up.AnyBlobGETs(layer.String()); got > 2 {
		t.Errorf("upstream saw %d GETs of the layer, want at most 2", got)
	}
}

// pullKillingMidTransfer has every node pull layer at once, kills victim
// once the upstream is halfway through a body, and checks that every other
// node stored the right bytes and none served more than maxCopies copies of
// the blob at once.
func pullKillingMidTransfer(t *testing.T, up *upstreamtest.Registry, nodes []*node, layer digest.Digest, victim *node, maxCopies float64) {
	t.Helper()
	release := up.Gate()
	defer release()
	errs := pullAll(t, up, nodes, "team/app", layer, victim, func() {
		select {
		case <-up.Halfway():
		case <-time.After(10 * time.Second):
			t.Error("the upstream never held a body")
		}
		victim.Kill()
		release()
	})
	for name, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, nd := range nodes {
		if nd == victim {
			continue
		}
		if ok, err := stored(nd, layer); !ok || err != nil {
			t.Errorf("%s stored the layer: %v, %v", nd.Name, ok, err)
		}
		if _, over := relayCopies(t, nd, maxCopies); over > 0 {
			t.Errorf("%s served more than %v copies of a blob at once", nd.Name, maxCopies)
		}
	}
}
