package peer

import (
	"encoding/json"
	"net"
	"net/netip"
	"time"

	"github.com/hashicorp/memberlist"
)

// nodeMeta is what a node gossips about itself.
type nodeMeta struct {
	HTTP string `json:"http"`
}

// delegate answers memberlist's questions; it never blocks.
type delegate struct{ c *Cluster }

func (d delegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(nodeMeta{HTTP: d.c.selfMember().HTTP})
	if len(b) > limit {
		return nil
	}
	return b
}
func (delegate) NotifyMsg([]byte)                { /* no user messages */ }
func (delegate) GetBroadcasts(int, int) [][]byte { return nil }
func (delegate) LocalState(bool) []byte          { return nil }
func (delegate) MergeRemoteState([]byte, bool)   {}

// events keeps the member map. memberlist calls it with its node lock held:
// it takes only c.mu and never calls back into memberlist.
type events struct{ c *Cluster }

func (e events) NotifyJoin(n *memberlist.Node)   { e.put(n, "peer joined") }
func (e events) NotifyUpdate(n *memberlist.Node) { e.put(n, "peer updated") }

func (e events) NotifyLeave(n *memberlist.Node) {
	if n.Name == e.c.cfg.NodeName {
		return
	}
	if was, count := e.drop(n.Name); was {
		e.c.log.Info("peer left", "peer", n.Name, "peers", count)
	}
}

// drop removes a member, reporting whether it was one and how many remain.
func (e events) drop(name string) (was bool, count int) {
	c := e.c
	c.mu.Lock()
	_, was = c.members[name]
	delete(c.members, name)
	delete(c.suspects, name)
	count = len(c.members)
	c.mu.Unlock()
	c.setPeersGauge(count)
	return was, count
}

// sameHost reports whether the HTTP address advertised (host:port) names
// the IP gossip came from. A host that is no IP (a name) never matches:
// the check is on what gossip saw, not on what a name resolves to later.
func sameHost(advertised string, gossip net.IP) bool {
	host, _, err := net.SplitHostPort(advertised)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	g, ok := netip.AddrFromSlice(gossip)
	return err == nil && ok && ip.Unmap() == g.Unmap()
}

func (e events) put(n *memberlist.Node, msg string) {
	c := e.c
	if n.Name == c.cfg.NodeName {
		return
	}
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.HTTP == "" {
		c.log.Warn("peer without an HTTP address ignored", "peer", n.Name, "addr", n.Address())
		return
	}
	if !c.cfg.AllowForeignAdvertise && !sameHost(meta.HTTP, n.Addr) {
		c.log.Warn("peer advertising an HTTP address on another host than its gossip ignored",
			"peer", n.Name, "http", meta.HTTP, "addr", n.Address())
		e.drop(n.Name)
		return
	}
	c.mu.Lock()
	c.members[n.Name] = member{Name: n.Name, HTTP: meta.HTTP, gossip: n.Address()}
	delete(c.suspects, n.Name) // a node that (re)joins starts with a clean slate
	count := len(c.members)
	c.mu.Unlock()
	c.setPeersGauge(count)
	c.log.Info(msg, "peer", n.Name, "http", meta.HTTP, "peers", count)
}

// NotifyConflict is memberlist's ConflictDelegate: two nodes share a name.
// One about this node's own name makes it not Ready for a while (see
// NameConflict): it cannot peer with the other node.
func (e events) NotifyConflict(existing, other *memberlist.Node) {
	e.c.log.Error("two nodes share a name", "peer", existing.Name, "addr", existing.Address(), "other", other.Address())
	if existing.Name == e.c.cfg.NodeName {
		e.c.conflict.Store(&nameConflict{other: other.Address(), at: time.Now()})
	}
}
