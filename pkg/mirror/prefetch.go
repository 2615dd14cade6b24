package mirror

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Prefetch results, the values of the metric's "result" label.
const (
	PrefetchFetched = "fetched" // the blob was filled (or a fill under way was joined) and verified
	PrefetchCached  = "cached"  // the store had it, or a fill of it was under way (a client's, another repository's): nothing to do
	PrefetchFailed  = "failed"  // the fill failed; a client asking later starts afresh
	PrefetchDropped = "dropped" // the mirror closed before the blob's turn
)

// prefetchQueue is the blobs waiting for a prefetch worker, in the order
// their manifests listed them (config first), and how many workers run.
type prefetchQueue struct {
	mu      sync.Mutex
	jobs    []prefetchJob
	workers int
}

type prefetchJob struct {
	req  oci.Request
	desc oci.Descriptor
}

// prefetch starts fetching the config and layers of the image manifest a
// client just got cold (req names it), so that they are arriving by the time
// the client asks for them. Each blob goes through the store's Fill, the
// same per-digest fill a client's own request joins, so the upstream sees
// one GET per blob. The blobs queue in the manifest's order, config first
// (what a client asks for first), for at most cfg.PrefetchConcurrency
// workers. A client's own request never waits for the queue: it starts
// its fill at once, and the queued prefetch of that blob then costs no
// worker. An index gets nothing: only the child manifests clients then
// ask for (their platform) are prefetched.
func (m *Mirror) prefetch(req oci.Request, mediaType string, data []byte) {
	if m.cfg.PrefetchConcurrency <= 0 || req.Via != oci.ViaClient || oci.IsIndex(mediaType) {
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
	var jobs []prefetchJob
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
		if m.ctx.Err() != nil {
			m.m.Prefetch(PrefetchDropped)
			continue
		}
		breq := req.Repo.Blob(d)
		breq.Via, breq.Hops, breq.Client = req.Via, req.Hops, req.Client // the same asker
		jobs = append(jobs, prefetchJob{breq, oci.Descriptor{MediaType: desc.MediaType, Digest: d, Size: desc.Size}})
		m.log.Debug("prefetch queued", "repo", req.Repo, "digest", d, "size", desc.Size)
	}
	q := &m.pf
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = append(q.jobs, jobs...)
	for q.workers < m.cfg.PrefetchConcurrency && q.workers < len(q.jobs) {
		q.workers++
		m.wg.Add(1)
		go m.prefetchWorker()
	}
}

// prefetchWorker prefetches the queue's blobs one at a time, first queued
// first, and ends when the queue is empty.
func (m *Mirror) prefetchWorker() {
	defer m.wg.Done()
	q := &m.pf
	for {
		q.mu.Lock()
		if len(q.jobs) == 0 {
			q.workers--
			q.mu.Unlock()
			return
		}
		j := q.jobs[0]
		q.jobs[0] = prefetchJob{}
		q.jobs = q.jobs[1:]
		q.mu.Unlock()
		result := PrefetchDropped
		if m.ctx.Err() == nil {
			result = m.prefetchBlob(j.req, j.desc)
		}
		m.m.Prefetch(result)
	}
}

// prefetchBlob fills one blob and waits until its bytes are verified (not
// for the durable commit that follows: the next blob need not wait for an
// fsync), so that the workers bound the transfers under way. A blob stored
// meanwhile, or already being fetched (a client asked for it before its
// turn), needs nothing from this worker.
func (m *Mirror) prefetchBlob(req oci.Request, desc oci.Descriptor) (result string) {
	if m.store.Has(req.Digest) {
		return PrefetchCached
	}
	if b, ok := m.store.Join(m.ctx, req.Digest); ok {
		b.Close()
		m.log.Debug("prefetch skipped, under way", "repo", req.Repo, "digest", req.Digest)
		return PrefetchCached
	}
	m.log.Debug("prefetch start", "repo", req.Repo, "digest", req.Digest)
	defer func() { m.log.Debug("prefetch end", "repo", req.Repo, "digest", req.Digest, "result", result) }()
	// The same fill a client's request makes: a client of the repository
	// joins it, and the opener records the blob as the repository's once
	// its source answers (cache.Known).
	known := m.store.Known(req.Repo, req.Digest)
	live := m.yield.start(req.Digest)
	defer m.yield.end(req.Digest, live)
	b, err := m.store.Fill(m.ctx, req.Digest, cache.FillMeta{Repo: req.Repo.String(), Size: desc.Size, Vouched: known, Ranges: m.ranges(req, desc.Size)}, m.yield.prefetch(live, m.opener(req)))
	if errors.Is(err, cache.ErrNotVouched) {
		// Being fetched for (or stored from) another repository: the
		// client's own request asks this repository's sources (vouch).
		return PrefetchCached
	}
	if err == nil {
		err = b.Verified()
		b.Close()
	}
	switch {
	case err == nil:
		return PrefetchFetched
	case m.ctx.Err() != nil:
		return PrefetchDropped
	default:
		m.log.Debug("prefetch", "repo", req.Repo, "digest", req.Digest, "err", err)
		return PrefetchFailed
	}
}

// prefetchYieldMax bounds how long a prefetch-only source waits for the
// clients' fills before it reads once more, so that its upstream
// connection does not sit idle for long (a fill whose connection is cut
// resumes at its offset anyway).
const prefetchYieldMax = 5 * time.Second

// clientFirst gives the fills clients are reading the upstream bandwidth
// and the CPU before the prefetch-only ones: a prefetch's source reads
// only while no client-read source is open, until a client asks for its
// blob; from then on it is client-read itself. On a loaded machine or a
// shared link the transfers share one budget, and the blob a client
// waits for would otherwise arrive at the pace of every prefetch at once
// (a containerd pull with prefetch on took 8.6-9.1 s against 5.6-5.8 s
// off). A prefetch still runs whenever no client fill does: before the
// first layer request, and while the client unpacks.
type clientFirst struct {
	mu      sync.Mutex
	reading int                       // client-read sources open: clients' fills, and prefetches a client asked for
	changed chan struct{}             // closed (and replaced) when reading falls to 0 or a prefetch is asked for
	live    map[digest.Digest]*pfLive // prefetch fills under way, from before the fill exists until it is verified
}

// pfLive is one prefetch fill; asked says a client asked for its blob.
type pfLive struct{ asked bool }

func (c *clientFirst) init() {
	c.changed = make(chan struct{})
	c.live = map[digest.Digest]*pfLive{}
}

// notify wakes the waiting prefetch sources; c.mu is held.
func (c *clientFirst) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// release ends one client-read source; c.mu is held.
func (c *clientFirst) release() {
	if c.reading--; c.reading == 0 {
		c.notify()
	}
}

// client makes the sources open returns count as client-read until closed.
func (c *clientFirst) client(open cache.Opener) cache.Opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		rc, size, source, err := open(ctx, offset)
		if err != nil {
			return rc, size, source, err
		}
		c.mu.Lock()
		c.reading++
		c.mu.Unlock()
		return &clientSource{ReadCloser: rc, c: c}, size, source, nil
	}
}

type clientSource struct {
	io.ReadCloser
	c    *clientFirst
	once sync.Once
}

func (s *clientSource) Close() error {
	s.once.Do(func() {
		s.c.mu.Lock()
		s.c.release()
		s.c.mu.Unlock()
	})
	return s.ReadCloser.Close()
}

// asked notes that a client asked for d: a prefetch of d under way (or
// about to open its source) is client-read from now on.
func (c *clientFirst) asked(d digest.Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.live[d]; l != nil && !l.asked {
		l.asked = true
		c.notify()
	}
}

// start registers a prefetch of d before its fill starts (so a client
// joining the fill finds it); end removes it.
func (c *clientFirst) start(d digest.Digest) *pfLive {
	l := &pfLive{}
	c.mu.Lock()
	c.live[d] = l
	c.mu.Unlock()
	return l
}

func (c *clientFirst) end(d digest.Digest, l *pfLive) {
	c.mu.Lock()
	if c.live[d] == l {
		delete(c.live, d)
	}
	c.mu.Unlock()
}

// prefetch makes the sources open returns wait for the clients' fills
// before each read while l is not asked for.
func (c *clientFirst) prefetch(l *pfLive, open cache.Opener) cache.Opener {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		rc, size, source, err := open(ctx, offset)
		if err != nil {
			return rc, size, source, err
		}
		return &prefetchSource{ReadCloser: rc, ctx: ctx, c: c, l: l}, size, source, nil
	}
}

type prefetchSource struct {
	io.ReadCloser
	ctx     context.Context
	c       *clientFirst
	l       *pfLive
	counted bool // counts in c.reading (guarded by c.mu)
}

func (s *prefetchSource) Read(p []byte) (int, error) {
	s.wait()
	return s.ReadCloser.Read(p)
}

// wait returns when s may read: its blob was asked for (s then counts as
// client-read), no client-read source is open, ctx ended (the read then
// fails), or prefetchYieldMax passed.
func (s *prefetchSource) wait() {
	c := s.c
	var timeout <-chan time.Time
	for {
		c.mu.Lock()
		if s.l.asked && !s.counted {
			s.counted = true
			c.reading++
		}
		if s.counted || c.reading == 0 {
			c.mu.Unlock()
			return
		}
		changed := c.changed
		c.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(prefetchYieldMax)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return
		case <-timeout:
			return
		}
	}
}

func (s *prefetchSource) Close() error {
	s.c.mu.Lock()
	if s.counted {
		s.counted = false
		s.c.release()
	}
	s.c.mu.Unlock()
	return s.ReadCloser.Close()
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
