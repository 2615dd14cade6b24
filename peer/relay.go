package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

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
	from   map[digest.Digest][]streamFrom // the peers this node's own fetches of a blob stream from now
}

type relayCount struct{ now, most int }

// streamFrom is one of this node's fetches of a blob: bytes [start, end)
// from peer (end -1: to the blob's end).
type streamFrom struct {
	peer       string
	start, end int64
	body       *peerBody
}

// AdmitCopy reserves one of the at most 2×fan-out copies of blob d this
// node serves to peers at once, for the relay request r. It returns ok
// false (answer 429, the asker goes to the next source) when all are
// taken; when this node's own fetch of the bytes asked for streams from
// the asker (two nodes whose views of the membership differ must not wait
// on each other; with stripes, two nodes may feed each other different
// stripes); or when r passed more relay hops than the plan's tree is deep
// (a loop). Else it returns release, to call when the copy ends. Client
// requests need no admission.
func (c *Cluster) AdmitCopy(r *http.Request, d digest.Digest) (release func(), ok bool) {
	if c == nil {
		return func() {}, true
	}
	_, asker, _ := c.sign.verify(r)
	if hops, err := strconv.Atoi(r.Header.Get(oci.RelayHopHeader)); r.Header.Get(oci.RelayHopHeader) != "" && (err != nil || hops < 0 || hops > c.maxRelayHops()) {
		c.cfg.Metrics.RelayLoop()
		c.log.Debug("relay request refused: too many hops", "peer", asker, "digest", d, "hops", r.Header.Get(oci.RelayHopHeader), "limit", c.maxRelayHops())
		return nil, false
	}
	start, end := oci.FirstRange(r.Header.Get("Range"))
	limit := 2 * c.cfg.Fanout
	rl := &c.relays
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for _, f := range rl.from[d] {
		if asker != "" && f.peer == asker && overlap(f.start, f.end, start, end) {
			c.cfg.Metrics.RelayRefused()
			return nil, false
		}
	}
	release, ok = rl.admit(c, d, limit)
	if ok && start > 0 { // a stripe (a blob's first bytes, [0, n), are no stripe)
		c.cfg.Metrics.RelayRange()
	}
	return release, ok
}

// relayTimeout is how long a node waits for a relay source's first
// response (it sends 103 Early Hints as soon as it joins or starts its own
// fill): the stall bound, IdleTimeout, not the shorter Timeout. A source
// in the plan is known to be fetching the blob, or to start when asked, so
// only a dead one (refused at once, or gone from the membership) or a stuck
// one (slowLimit stalls or late answers in a row) sends the asker, and
// through it its subtree, to the next source; a source slow to answer on
// a loaded machine is asked again and does not send a stripe to the
// upstream a second time.
func (c *Cluster) relayTimeout() time.Duration { return max(c.cfg.Timeout, c.cfg.IdleTimeout) }

// maxRelayHops is the most relay hops a request may have passed: the
// depth of the deepest tree over the live members, plus two (a failover
// to a sibling whose own fill goes to its parent, a join not yet seen).
func (c *Cluster) maxRelayHops() int {
	n, k := len(c.live()), max(c.cfg.Fanout, 1)
	depth := 0
	for reach, level := 1, 1; reach < n; depth++ {
		if k == 1 {
			reach++
			continue
		}
		level *= k
		reach += level
	}
	return depth + 2
}

// relayHops is the relay hop count to send with a request for bytes
// [offset, end) (end -1: to the end) of a fill started by req: one more
// than req passed when those bytes overlap the ones req asked for, else
// one. A fill started by a request for one stripe asks for every stripe,
// and each stripe's chain of parents is its own tree's: counted across
// stripes, a fill started late on a loaded node (at the end of another
// stripe's chain) was refused by every parent and fetched its stripes from
// the upstream a second time.
func relayHops(req oci.Request, offset, end int64) int {
	if req.RelayHops > 0 && overlap(req.RelayStart, req.RelayEnd, offset, end) {
		return req.RelayHops + 1
	}
	return 1
}

// overlap reports whether [a, b) and [c, d) share a byte; an end of -1
// means the blob's end.
func overlap(a, b, c, d int64) bool {
	return (b < 0 || c < b) && (d < 0 || a < d)
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

// streamsFrom records that this node's fetch of d's bytes [start, end)
// (end -1: to the end) streams from peer until body is closed.
func (c *Cluster) streamsFrom(d digest.Digest, peer string, start, end int64, body *peerBody) {
	rl := &c.relays
	rl.mu.Lock()
	if rl.from == nil {
		rl.from = map[digest.Digest][]streamFrom{}
	}
	rl.from[d] = append(rl.from[d], streamFrom{peer: peer, start: start, end: end, body: body})
	rl.mu.Unlock()
	body.onClose = func() {
		rl.mu.Lock()
		defer rl.mu.Unlock()
		fs := rl.from[d]
		for i, f := range fs {
			if f.body == body {
				fs = append(fs[:i], fs[i+1:]...)
				break
			}
		}
		if len(fs) == 0 {
			delete(rl.from, d)
		} else {
			rl.from[d] = fs
		}
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

// relayBlob fetches blob d's bytes [offset, end) (end -1: to the blob's
// end) down the relay plan: this node's
// parent, then on failure (dead, stalled, refused, busy) the next sources
// in the plan, one at a time. It returns ErrNoPeer (joined with what each
// said) once the plan says "upstream". A source that answers busy is not
// suspected; one that cannot be reached is (see ask), so a fill that
// resumes after a broken stream skips it. A live one whose stream stalled
// or that sent no answer in time is asked again until it did so slowLimit
// times in a row on the blob (see askAgain, stalled): it is slow, and the
// upstream would send its bytes twice.
func (c *Cluster) relayBlob(ctx context.Context, req oci.Request, offset, end int64) (blobResult, error) {
	d := req.Digest
	p, self := c.blobPlan(d)
	if self < 0 {
		return blobResult{}, ErrNoPeer
	}
	r, m, from, err := askSources(ctx, c, p, 0, self, d, func(ctx context.Context, cancel context.CancelCauseFunc, m member) (blobResult, error) {
		return c.tryBlob(ctx, cancel, m, oci.ViaPeerRelay, req, offset, end)
	})
	if from != "" {
		c.cfg.Metrics.RelayFetch(from, p.Depth(0, self))
	}
	if err != nil {
		return blobResult{}, err
	}
	c.streamsFrom(d, m, offset, end, r.body)
	return r, nil
}

// askSources asks the sources of stripe s of plan p for this node (self),
// for blob d, one at a time with try, and returns the first answer, the
// peer that gave it and how it came ("parent", "failover"); "upstream"
// with ErrNoPeer (joined with what each source said) once the plan says
// so or every source failed; "" with ctx's error when ctx ended.
// Suspected sources are skipped, and those that stalled slowLimit times in
// a row on the blob; a live source that stalled
// or sent no answer in time fewer times is asked again (askAgain): it is
// slow, and the upstream would send its bytes a second time.
func askSources[T any](ctx context.Context, c *Cluster, p *Plan, s, self int, d digest.Digest, try func(context.Context, context.CancelCauseFunc, member) (T, error)) (r T, peer, from string, err error) {
	byName := map[string]member{}
	for _, m := range c.live() {
		byName[m.Name] = m
	}
	var errs []error
	for i, src := range p.Sources(s, self) {
		if src == Upstream {
			break
		}
		m, ok := byName[p.Nodes[src]]
		if !ok || c.passOver(m.Name, d.String()) {
			continue
		}
		for {
			actx, cancel := context.WithCancelCause(ctx)
			r, err = try(actx, cancel, m)
			if err == nil || ctx.Err() != nil || !c.askAgain(m.Name, d.String(), err) {
				break
			}
			c.log.Debug("relay source slow, asked again", "peer", m.Name, "digest", d, "stripe", s, "err", err)
		}
		if err == nil {
			from = "parent"
			if i > 0 {
				from = "failover"
			}
			c.log.Debug("relay from peer", "peer", m.Name, "digest", d, "stripe", s, "from", from)
			return r, m.Name, from, nil
		}
		if ctx.Err() != nil {
			return r, "", "", ctx.Err() // no source's fault: nothing counted
		}
		c.log.Debug("relay source failed", "peer", m.Name, "digest", d, "stripe", s, "err", err)
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return r, "", "upstream", ErrNoPeer
	}
	return r, "", "upstream", fmt.Errorf("%w: %w", ErrNoPeer, errors.Join(errs...))
}
