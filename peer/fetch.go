package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// FetchBlob returns the blob's bytes from offset on and its total size (-1
// if unknown), from a peer. It follows the blob's relay plan (see Plan): it
// asks this node's parent in the digest's tree in relay mode (the parent
// streams the blob while it downloads it, from its own parent or, at the
// root, from upstream), and when the parent fails, stalls or is busy, the
// next sources of the plan one at a time. When the plan says "upstream"
// (this node is the root, or every source failed) and a client asks, it
// asks the next AskNext ranked nodes in holder mode, in parallel, and takes
// the first that has it; a fill for a relay request goes upstream at once,
// as an owner's did. Suspected peers are skipped, and peers that stalled
// slowLimit times in a row on the blob. The bytes are not
// verified here: the caller (the store's fill) hashes them once and calls
// the body's Blame when the blob fails its digest, which suspects the peer.
// A Read blocked longer than IdleTimeout fails (a stall, see stalled).
// Any error means "go upstream" (ErrNoPeer when nobody was there to
// ask). It blocks until a peer's final response headers or failure.
func (c *Cluster) FetchBlob(ctx context.Context, req oci.Request, offset int64) (io.ReadCloser, int64, error) {
	return c.fetchBlob(ctx, req, offset, -1)
}

// FetchFirst returns the blob's first n bytes (all of it when it is
// smaller) and its total size, as FetchBlob from offset 0 does, but asks
// each source for those bytes only (a Range request). So a parent whose own
// fetch of other bytes of the blob streams from this node (a striped fill:
// this node's first bytes come down the one-stripe tree, its stripes down
// the stripe trees) does not take the request for a wait on itself and
// refuse it, and a parent sends no more than was asked for.
func (c *Cluster) FetchFirst(ctx context.Context, req oci.Request, n int64) (io.ReadCloser, int64, error) {
	if n <= 0 {
		return nil, 0, fmt.Errorf("blob %s: first %d bytes: %w", req.Digest, n, oci.ErrUnavailable)
	}
	return c.fetchBlob(ctx, req, 0, n)
}

// fetchBlob is FetchBlob of the bytes [offset, end); end -1 for the blob's
// end.
func (c *Cluster) fetchBlob(ctx context.Context, req oci.Request, offset, end int64) (io.ReadCloser, int64, error) {
	repo, d := req.Repo, req.Digest
	if err := d.Validate(); err != nil {
		return nil, 0, fmt.Errorf("blob %q: %w", d, oci.ErrDigestInvalid)
	}
	r, err := c.relayBlob(ctx, req, offset, end)
	if err != nil && ctx.Err() == nil && req.Via == oci.ViaClient {
		_, holders := c.plan(d.String())
		r, err = fetch(ctx, c, nil, holders, nil, func(ctx context.Context, cancel context.CancelCauseFunc, m member) (blobResult, error) {
			return c.tryBlob(ctx, cancel, m, oci.ViaPeerHolder, req, offset, end)
		}, func(r blobResult) { _ = r.body.Close() })
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blob %s from peers: %w", d, err)
	}
	c.log.Debug("blob from peer", "source", "peer", "peer", r.body.peer, "digest", d, "repo", repo.String(), "offset", offset, "size", r.size)
	return r.body, r.size, nil
}

// FetchManifest returns a manifest by digest from a peer, like FetchBlob:
// owner first, then holders in parallel. The bytes are verified and at most
// oci.MaxManifestSize; the descriptor's media type is the peer's
// Content-Type. Any error means "go upstream".
func (c *Cluster) FetchManifest(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error) {
	d := req.Digest
	if err := d.Validate(); err != nil {
		return oci.Descriptor{}, nil, fmt.Errorf("manifest %q: %w", d, oci.ErrDigestInvalid)
	}
	owner, holders := c.plan(d.String())
	try := func(via oci.Via) tryFunc[manifestResult] {
		return func(ctx context.Context, cancel context.CancelCauseFunc, m member) (manifestResult, error) {
			return c.tryManifest(ctx, cancel, m, via, req)
		}
	}
	r, err := fetch(ctx, c, owner, holders, try(oci.ViaPeerOwner), try(oci.ViaPeerHolder), func(manifestResult) {})
	if err != nil {
		return oci.Descriptor{}, nil, fmt.Errorf("manifest %s from peers: %w", d, err)
	}
	return r.desc, r.body, nil
}

// ResolveTag asks the tag's owner (in owner mode, with HEAD) which manifest
// a tag names, so a cluster revalidates a tag upstream once per TTL instead
// of once per node. It fails with ErrSelfOwner when this node owns the tag:
// the caller then asks upstream itself, and with ErrNoPeer when LocalTags
// is set. Any error means "go upstream".
func (c *Cluster) ResolveTag(ctx context.Context, req oci.Request) (oci.Descriptor, error) {
	if c.cfg.LocalTags {
		return oci.Descriptor{}, ErrNoPeer
	}
	repo, tag := req.Repo, req.Reference
	key := repo.String() + ":" + tag
	ranked := rank(key, c.live())
	owner := ranked[0]
	switch {
	case owner.Name == c.cfg.NodeName:
		return oci.Descriptor{}, fmt.Errorf("tag %s: %w", key, ErrSelfOwner)
	case c.suspected(owner.Name):
		return oci.Descriptor{}, fmt.Errorf("tag %s: owner %s suspected: %w", key, owner.Name, ErrNoPeer)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(context.Canceled)
	resp, err := c.ask(ctx, cancel, owner, oci.ViaPeerOwner, http.MethodHead, manifestPath(repo, tag), repo.Registry,
		c.cfg.OwnerTimeout, http.Header{"Accept": {strings.Join(oci.ManifestTypes, ", ")}})
	if err != nil {
		return oci.Descriptor{}, fmt.Errorf("tag %s: %w", key, err)
	}
	if resp.StatusCode != http.StatusOK {
		return oci.Descriptor{}, fmt.Errorf("tag %s: %w", key, statusError(owner, resp, oci.ErrManifestUnknown))
	}
	_ = resp.Body.Close()
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil || resp.ContentLength < 0 {
		return oci.Descriptor{}, fmt.Errorf("tag %s: peer %s: no digest or length: %w", key, owner.Name, oci.ErrUnavailable)
	}
	return oci.Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: d, Size: resp.ContentLength}, nil
}

// plan ranks the live nodes for key and picks whom to ask: the owner (nil
// when it is this node or passed over) and up to AskNext holders, the next
// ranked nodes besides this one that are not passed over (passOver).
func (c *Cluster) plan(key string) (owner *member, holders []member) {
	ranked := rank(key, c.live())
	self := c.cfg.NodeName
	if ranked[0].Name != self && !c.passOver(ranked[0].Name, key) {
		owner = &ranked[0]
	}
	for _, m := range ranked[1:] {
		if len(holders) >= c.cfg.AskNext {
			break
		}
		if m.Name != self && !c.passOver(m.Name, key) {
			holders = append(holders, m)
		}
	}
	return owner, holders
}

// tryFunc asks one peer. It owns cancel on success (the result releases it)
// and must call it on failure.
type tryFunc[T any] func(ctx context.Context, cancel context.CancelCauseFunc, m member) (T, error)

// fetch asks the owner, if any, then the holders in parallel.
func fetch[T any](ctx context.Context, c *Cluster, owner *member, holders []member, asOwner, asHolder tryFunc[T], discard func(T)) (T, error) {
	var errs []error
	if owner != nil {
		octx, cancel := context.WithCancelCause(ctx)
		r, err := asOwner(octx, cancel, *owner)
		if err == nil {
			return r, nil
		}
		c.log.Debug("owner failed", "peer", owner.Name, "err", err)
		errs = append(errs, err)
	}
	if len(holders) > 0 && ctx.Err() == nil {
		r, err := race(ctx, holders, asHolder, discard)
		if err == nil {
			return r, nil
		}
		errs = append(errs, err)
	}
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if len(errs) == 0 {
		return zero, ErrNoPeer
	}
	return zero, fmt.Errorf("%w: %w", ErrNoPeer, errors.Join(errs...))
}
