package peer

import (
	"encoding/json"
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
	c := e.c
	if n.Name == c.cfg.NodeName {
		return
	}
	c.mu.Lock()
	delete(c.members, n.Name)
	delete(c.suspects, n.Name)
	count := len(c.members)
	c.mu.Unlock()
	c.setPeersGauge(count)
	c.log.Info("peer left", "peer", n.Name, "peers", count)
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
