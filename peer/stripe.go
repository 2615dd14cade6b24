package peer

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// Striping: a large blob is fetched as the plan's stripes, each byte range
// from this node's parent in that stripe's tree (see Plan), all at once,
// so every node downloads each stripe from a different node and uploads
// the one stripe it is an inner node for. The store fills the one blob
// from the ranges (cache.RangeSource); the mirror asks FirstBytes, Stripes
// and FetchRange, and the upstream where they answer ErrNoPeer. A fill
// learns the size from its first stream (FirstBytes of the blob, down the
// one-stripe tree as before): a small blob ends there.

// CanStripe reports whether a blob may be fetched as stripes: striping is
// on and another node is live.
func (c *Cluster) CanStripe() bool {
	return c.cfg.StripeMin >= 0 && len(c.live()) >= 2
}

// FirstBytes is how much of a blob of size bytes (0: not known yet) a
// fill reads in one stream (down the one-stripe tree) before it fetches the
// rest as the plan's stripes. It is at most the smallest stripe, so those
// bytes lie in stripe 0 and the upstream still sends each byte once. When
// the size is known (a manifest gave it) it is at most firstBytesMax, so
// the stripes start (each node asks its stripe parents, which start
// theirs) as soon as the size is confirmed rather than after a whole
// stripe came down one tree. When it is not, it is the whole smallest
// stripe: a smaller blob ends in that one stream, as before striping.
func (c *Cluster) FirstBytes(size int64) int64 {
	smallest := int64(DefaultStripeMin)
	if c.cfg.StripeMin > 0 {
		smallest = max(c.cfg.StripeMin-c.cfg.StripeMin%stripeAlign, stripeAlign) // stripe 0 is at least this long
	}
	if size <= 0 {
		return smallest
	}
	return min(smallest, firstBytesMax)
}

// firstBytesMax bounds FirstBytes.
const firstBytesMax = 1 << 20

// Stripes returns the byte ranges, [start, end), a blob of size bytes is
// fetched as over the live members: one (the whole blob) when it is too
// small to stripe or the node is alone.
func (c *Cluster) Stripes(d digest.Digest, size int64) [][2]int64 {
	p, _ := c.stripePlan(d, size)
	out := make([][2]int64, p.Stripes())
	for s := range out {
		out[s][0], out[s][1] = p.Range(s)
	}
	return out
}

func (c *Cluster) stripePlan(d digest.Digest, size int64) (*Plan, int) {
	live := c.live()
	names := make([]string, len(live))
	for i, m := range live {
		names[i] = m.Name
	}
	o := PlanOptions{Fanout: c.cfg.Fanout, StripeMin: c.cfg.StripeMin}
	if c.cfg.StripeMin < 0 {
		o.StripeMin = max(size, 1) // one stripe
	}
	p := NewPlan(d.String(), names, size, o)
	return p, p.Index(c.cfg.NodeName)
}

// FetchRange returns blob req.Digest's bytes [offset, end) (unverified),
// of a blob of size bytes, from a peer: down the tree of the stripe that
// holds offset, over the live members now. It asks this node's parent in
// that tree in relay mode, then on failure (dead, stalled, busy) the next
// sources of the plan one at a time, skipping suspected ones and those
// that stalled slowLimit times in a row on the blob (a live source that
// stalled or sent no answer in time fewer times is slow, not dead: it is
// asked again, see askAgain and stalled), and fails
// with ErrNoPeer once the plan says "upstream" (this node is the stripe's
// root, or every source failed): the caller asks upstream for the range.
// The body's Blame suspects the peer when the blob fails its digest.
func (c *Cluster) FetchRange(ctx context.Context, req oci.Request, size, offset, end int64) (io.ReadCloser, error) {
	d := req.Digest
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob %q: %w", d, oci.ErrDigestInvalid)
	}
	if offset < 0 || end > size || offset >= end {
		return nil, fmt.Errorf("blob %s: range %d-%d of %d bytes: %w", d, offset, end, size, oci.ErrUnavailable)
	}
	p, self := c.stripePlan(d, size)
	if self < 0 {
		return nil, ErrNoPeer
	}
	s := 0
	for s < p.Stripes()-1 {
		if _, e := p.Range(s); offset < e {
			break
		}
		s++
	}
	body, m, from, err := askSources(ctx, c, p, s, self, d, func(ctx context.Context, cancel context.CancelCauseFunc, m member) (*peerBody, error) {
		return c.tryRange(ctx, cancel, m, req, size, offset, end)
	})
	if from != "" {
		c.cfg.Metrics.RelayStripe(from, p.Depth(s, self))
	}
	if err != nil {
		return nil, err
	}
	c.streamsFrom(d, m, offset, end, body)
	return body, nil
}

// tryRange asks m for bytes [offset, end) in relay mode; only a 206 of
// exactly that range of a blob of size bytes is taken.
func (c *Cluster) tryRange(ctx context.Context, cancel context.CancelCauseFunc, m member, req oci.Request, size, offset, end int64) (*peerBody, error) {
	repo, d := req.Repo, req.Digest
	hdr := blobHeader(req, true, size, offset, end) // FetchRange checked 0 <= offset < end <= size
	resp, err := c.ask(ctx, cancel, m, oci.ViaPeerRelay, http.MethodGet, blobPath(repo, d), repo.Registry, c.relayTimeout(), hdr)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusTooManyRequests:
		_ = statusError(m, resp, nil)
		err = fmt.Errorf("peer %s: %w", m.Name, ErrBusy)
		cancel(err)
		return nil, err
	default:
		err = statusError(m, resp, oci.ErrBlobUnknown)
		cancel(err)
		return nil, err
	}
	total, err := oci.ContentRangeAt(resp.Header.Get("Content-Range"), offset)
	if err == nil && (total != size || resp.ContentLength != end-offset) {
		err = fmt.Errorf("Content-Range %q, length %d for bytes %d-%d of %d", resp.Header.Get("Content-Range"), resp.ContentLength, offset, end-1, size)
	}
	if err != nil {
		_ = resp.Body.Close()
		err = fmt.Errorf("peer %s: %w: %w", m.Name, err, oci.ErrUnavailable)
		cancel(err)
		return nil, err
	}
	return c.newBody(ctx, cancel, m, d, resp.Body), nil
}
