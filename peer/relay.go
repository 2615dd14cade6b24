package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// ErrBusy is a relay request's answer from a node already serving
// MaxCopies copies of the blob: ask the next source in the plan.
var ErrBusy = errors.New("peer busy: serving its most copies of this blob")

// relays counts the copies of each blob this node is serving to peers in
// relay mode, so no node serves more than the plan's MaxCopies at once.
type relays struct {
	mu     sync.Mutex
	copies map[digest.Digest]*relayCount
	from   map[digest.Digest]string // the peer this node's own fetch of a blob streams from now
}

type relayCount struct{ now, most int }

// AdmitCopy reserves one of the at most 2×fan-out copies of blob d this
// node serves to peers at once, for the relay request r. It returns ok
// false (answer 429, the asker goes to the next source) when all are
// taken, or when this node's own fetch of d streams from the asker (two
// nodes whose views of the membership differ must not wait on each
// other); else release, to call when the copy ends. Client requests need
// no admission.
func (c *Cluster) AdmitCopy(r *http.Request, d digest.Digest) (release func(), ok bool) {
	if c == nil {
		return func() {}, true
	}
	_, asker, _ := c.sign.verify(r)
	limit := 2 * c.cfg.Fanout
	rl := &c.relays
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if asker != "" && rl.from[d] == asker {
		c.cfg.Metrics.RelayRefused()
		return nil, false
	}
	return rl.admit(c, d, limit)
}

// admit counts a copy of d; r.mu is held.
func (r *relays) admit(c *Cluster, d digest.Digest, limit int) (release func(), ok bool) {
	if r.copies == nil {
		r.copies = map[digest.Digest]*relayCount{}
	}
	n := r.copies[d]
	if n == nil {
		n = &relayCount{}
		r.copies[d] = n
	}
	if n.now >= limit {
		c.cfg.Metrics.RelayRefused()
		return nil, false
	}
	n.now++
	n.most = max(n.most, n.now)
	c.cfg.Metrics.RelayCopy(+1)
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			c.cfg.Metrics.RelayCopy(-1)
			if n.now--; n.now == 0 {
				c.cfg.Metrics.RelayCopiesPerBlob(n.most)
				delete(r.copies, d)
			}
		})
	}, true
}

// streamsFrom records that this node's fetch of d streams from peer until
// body is closed.
func (c *Cluster) streamsFrom(d digest.Digest, peer string, body *peerBody) {
	rl := &c.relays
	rl.mu.Lock()
	if rl.from == nil {
		rl.from = map[digest.Digest]string{}
	}
	rl.from[d] = peer
	rl.mu.Unlock()
	body.onClose = func() {
		rl.mu.Lock()
		if rl.from[d] == peer {
			delete(rl.from, d)
		}
		rl.mu.Unlock()
	}
}

// blobPlan is the relay plan of blob d over the live members, and this
// node's place in it. The size is not known before the first bytes, so a
// blob is one stripe here: one tree of fan-out k rooted at the digest's
// owner.
func (c *Cluster) blobPlan(d digest.Digest) (*Plan, int) {
	live := c.live()
	names := make([]string, len(live))
	for i, m := range live {
		names[i] = m.Name
	}
	p := NewPlan(d.String(), names, -1, PlanOptions{Fanout: c.cfg.Fanout})
	return p, p.Index(c.cfg.NodeName)
}

// relayBlob fetches blob d from offset on down the relay plan: this node's
// parent, then on failure (dead, stalled, refused, busy) the next sources
// in the plan, one at a time. It returns ErrNoPeer (joined with what each
// said) once the plan says "upstream". A source that answers busy is not
// suspected; one that cannot be reached or stalls is (see ask, peerBody),
// so a fill that resumes after a broken stream skips it.
func (c *Cluster) relayBlob(ctx context.Context, req oci.Request, offset int64) (blobResult, error) {
	d := req.Digest
	p, self := c.blobPlan(d)
	if self < 0 {
		return blobResult{}, ErrNoPeer
	}
	byName := map[string]member{}
	for _, m := range c.live() {
		byName[m.Name] = m
	}
	var errs []error
	for i, src := range p.Sources(0, self) {
		if src == Upstream {
			break
		}
		m, ok := byName[p.Nodes[src]]
		if !ok || c.suspected(m.Name) {
			continue
		}
		actx, cancel := context.WithCancelCause(ctx)
		r, err := c.tryBlob(actx, cancel, m, oci.ViaPeerRelay, req, offset)
		if err == nil {
			c.streamsFrom(d, m.Name, r.body)
			from := "parent"
			if i > 0 {
				from = "failover"
			}
			c.cfg.Metrics.RelayFetch(from, p.Depth(0, self))
			return r, nil
		}
		if ctx.Err() != nil {
			return blobResult{}, ctx.Err()
		}
		c.log.Debug("relay source failed", "peer", m.Name, "digest", d, "offset", offset, "err", err)
		errs = append(errs, err)
	}
	c.cfg.Metrics.RelayFetch("upstream", p.Depth(0, self))
	if len(errs) == 0 {
		return blobResult{}, ErrNoPeer
	}
	return blobResult{}, fmt.Errorf("%w: %w", ErrNoPeer, errors.Join(errs...))
}
