package peers

import (
	"fmt"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// TestJoinMidTransferReshufflesNothing: five nodes (fan-out 2) pull one
// cold blob at once; while the upstream holds its body half way, three
// nodes join, which changes every plan computed from now on. The transfers
// under way keep their sources: every node gets the right bytes and the
// upstream still serves the blob once.
func TestJoinMidTransferReshufflesNothing(t *testing.T) {
	const n, joiners, k = 5, 3, 2
	up := upstreamtest.New(t)
	layer, _ := pushLayer(t, up)
	opts := func(name string) nodetest.Member {
		return nodetest.Member{Name: name, Mutate: func(c *config.Config) {
			c.Peers.Fanout = k
			c.Peers.Timeout = config.Duration(20 * time.Second) // only the join may move a child, not a parent slowed by load
		}}
	}
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(t)
	}
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = nodetest.StartMember(t, up, gossip[i], gossip, opts(fmt.Sprintf("n%d", i)))
	}
	waitPeers(t, nodes, n-1)

	release := up.Gate()
	t.Cleanup(release)
	done := make(chan map[string]error, 1)
	go func() { done <- pullAll(t, up, nodes, "team/app", layer, nil, nil) }()
	deadline := time.Now().Add(30 * time.Second)
	for len(up.HeldRequests()) == 0 { // the root's upstream GET, held half way
		if time.Now().After(deadline) {
			t.Fatal("no upstream GET held")
		}
		time.Sleep(10 * time.Millisecond)
	}

	all := append([]*node{}, nodes...)
	for i := range joiners {
		all = append(all, nodetest.StartMember(t, up, freeAddr(t), gossip, opts(fmt.Sprintf("j%d", i))))
	}
	waitPeers(t, all, n+joiners-1)
	release()

	select {
	case errs := <-done:
		for name, err := range errs {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the pull did not end after the join")
	}
	if got := up.AnyBlobGETs(layer.String()); got != 1 {
		t.Errorf("upstream saw %d GETs of the layer after a join mid-transfer, want 1", got)
	}
}
