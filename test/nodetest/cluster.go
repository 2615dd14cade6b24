package nodetest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// Member is how one cluster node differs from the others.
type Member struct {
	Name   string                          // peers.nodeName; "" lets the node pick its own
	Secret string                          // the gossip secret; "" means the cluster's
	Wrap   func(http.Handler) http.Handler // around the node's handler
	Mutate func(*config.Config)            // any other change, before the config is validated
}

// StartCluster starts n members named n0.. in front of up that all name
// each other's gossip address as seeds, and waits until each counts the
// others as peers. members[i], when set, changes node i (its Name stays
// n<i> unless the Member names another).
func StartCluster(t testing.TB, up *upstreamtest.Registry, n int, members map[int]Member) []*Node {
	t.Helper()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = proctest.FreeAddr(t)
	}
	nodes := make([]*Node, n)
	for i := range nodes {
		m := members[i]
		if m.Name == "" {
			m.Name = fmt.Sprintf("n%d", i)
		}
		nodes[i] = StartMember(t, up, gossip[i], gossip, m)
	}
	WaitPeers(t, nodes, n-1)
	return nodes
}

// StartMember starts a cluster node in front of up with gossip on bind,
// joining seeds. Unlike Start, the node is served by plain http.Servers of
// the test's (its handler and its admin handler), so that Kill can cut it
// while its gossip goes on. It stops when the test ends.
func StartMember(t testing.TB, up *upstreamtest.Registry, bind string, seeds []string, m Member) *Node {
	t.Helper()
	ln := listen(t)
	secret := m.Secret
	if secret == "" {
		secret = "the cluster secret"
	}
	cfg := up.BerthConfig(t)
	cfg.Cache.GCInterval = 0
	cfg.ShutdownGrace = config.Duration(time.Second)
	cfg.Peers = config.Peers{
		Bind: bind, Advertise: ln.Addr().String(), Join: seeds, SecretFile: WriteSecret(t, secret),
		Timeout: config.Duration(2 * time.Second), AskNext: 2, NodeName: m.Name,
		RejoinInterval: config.Duration(500 * time.Millisecond),
	}
	if m.Mutate != nil {
		m.Mutate(cfg)
	}
	srv := newServer(t, cfg)
	h := srv.Handler()
	if m.Wrap != nil {
		h = m.Wrap(h)
	}
	n := &Node{Server: srv, Name: m.Name, hs: &http.Server{Handler: h}}
	admin := &http.Server{Handler: srv.AdminHandler()}
	adminLn := listen(t)
	n.setAddrs(ln, adminLn)
	done := make(chan struct{}, 2)
	go func() { _ = n.hs.Serve(ln); done <- struct{}{} }()
	go func() { _ = admin.Serve(adminLn); done <- struct{}{} }()
	t.Cleanup(func() {
		_ = n.hs.Close()
		_ = admin.Close()
		<-done
		<-done
		_ = srv.Close()
	})
	return n
}

// Kill makes a member stop answering at once, like a crashed process:
// its connections are cut and nothing new is accepted. Its gossip stays up
// until the test ends, so the others still rank it: the harder case.
func (n *Node) Kill() {
	if n.hs != nil {
		_ = n.hs.Close()
	}
}

// Peers reads the node's berth_peers gauge.
func (n *Node) Peers(t testing.TB) int {
	t.Helper()
	mfs, err := n.Registry().Gather()
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

// WaitPeers waits (15s at most) until every node counts want peers.
func WaitPeers(t testing.TB, nodes []*Node, want int) {
	t.Helper()
	// Generous: nine memberlist nodes converge in well under a second on
	// a quiet machine, but took over 15 s at load average 50.
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		for n.Peers(t) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %d peers, want %d", n.Name, n.Peers(t), want)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
}

// WriteSecret writes a gossip secret file and returns its path.
func WriteSecret(t testing.TB, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
