package mirror

import (
	"errors"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Prefetch results, the values of the metric's "result" label.
const (
	PrefetchFetched = "fetched" // the blob was filled (or a fill under way was joined) and verified
	PrefetchCached  = "cached"  // the store had it (or another repository's fill has it under way): nothing to do
	PrefetchFailed  = "failed"  // the fill failed; a client asking later starts afresh
	PrefetchDropped = "dropped" // the mirror closed before the blob's turn
)

// prefetch starts fetching the config and layers of the image manifest a
// client just got cold (req names it), so that they are arriving by the time
// the client asks for them. Each blob goes through the store's Fill, the
// same per-digest fill a client's own request joins, so the upstream sees
// one GET per blob. At most cfg.PrefetchConcurrency blobs are fetched at
// once; the rest wait their turn in the background. A client's own request
// never waits for that semaphore. An index gets nothing: only the child
// manifests clients then ask for (their platform) are prefetched.
func (m *Mirror) prefetch(req oci.Request, mediaType string, data []byte) {
	if m.sem == nil || req.Via != oci.ViaClient || oci.IsIndex(mediaType) {
		return
	}
	man, err := oci.DecodeManifest(data)
	if err != nil {
		return
	}
	descs := man.Layers
	if man.Config != nil {
		descs = append([]v1.Descriptor{*man.Config}, descs...)
	}
	seen := map[digest.Digest]bool{}
	for _, desc := range descs {
		d := desc.Digest
		if d.Validate() != nil || seen[d] {
			continue
		}
		seen[d] = true
		if m.store.Has(d) {
			m.m.Prefetch(PrefetchCached)
			continue
		}
		breq := req.Repo.Blob(d)
		breq.Via, breq.Hops, breq.Client = req.Via, req.Hops, req.Client // the same asker
		m.wg.Add(1)
		go m.prefetchBlob(breq, oci.Descriptor{MediaType: desc.MediaType, Digest: d, Size: desc.Size})
	}
}

// prefetchBlob fills one blob in its turn and waits for the fill to end, so
// that the semaphore bounds the fetches under way, not their start.
func (m *Mirror) prefetchBlob(req oci.Request, desc oci.Descriptor) {
	defer m.wg.Done()
	select {
	case m.sem <- struct{}{}:
	case <-m.ctx.Done():
		m.m.Prefetch(PrefetchDropped)
		return
	}
	defer func() { <-m.sem }()
	if m.store.Has(req.Digest) {
		m.m.Prefetch(PrefetchCached)
		return
	}
	// The same fill a client's request makes: a client of the repository
	// joins it, and the opener records the blob as the repository's once
	// its source answers (cache.Known).
	known := m.store.Known(req.Repo, req.Digest)
	b, err := m.store.Fill(m.ctx, req.Digest, cache.FillMeta{Repo: req.Repo.String(), Size: desc.Size, Vouched: known, Ranges: m.ranges(req)}, m.opener(req))
	if errors.Is(err, cache.ErrNotVouched) {
		// Being fetched for (or stored from) another repository: the
		// client's own request asks this repository's sources (vouch).
		m.m.Prefetch(PrefetchCached)
		return
	}
	if err == nil {
		err = b.Done()
		b.Close()
	}
	switch {
	case err == nil:
		m.m.Prefetch(PrefetchFetched)
	case m.ctx.Err() != nil:
		m.m.Prefetch(PrefetchDropped)
	default:
		m.log.Debug("prefetch", "repo", req.Repo, "digest", req.Digest, "err", err)
		m.m.Prefetch(PrefetchFailed)
	}
}

// Close stops the prefetches waiting for their turn and waits for the
// running ones to let go of their fills (the fills themselves go on in the
// store until it closes). The Mirror answers requests after Close, but
// prefetches nothing more.
func (m *Mirror) Close() {
	m.cancel()
	m.wg.Wait()
}

// WaitPrefetch blocks until every prefetch started so far has ended: its
// blobs are stored, or failed.
func (m *Mirror) WaitPrefetch() { m.wg.Wait() }
