// Package mirror owns the miss path: answer a request from the store, else
// fill the store from peers, then from the upstream, verifying every byte
// by digest. Who asks (the request's Via) decides which sources it may use.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

// Config tunes a Mirror. The zero value is ready to use.
type Config struct {
	TagTTL  time.Duration    // how long a tag's digest is trusted; 0 means the config default (tagTTL)
	Logger  *slog.Logger     // nil discards
	Metrics *metrics.Metrics // nil counts nothing
	Now     func() time.Time // nil means time.Now
	// Pins are policy pins by tag key (cache.TagKey): such a tag is served
	// only as its digest, whatever the upstream says (see pinned).
	Pins map[string]digest.Digest
	// PrefetchConcurrency is how many blobs of a manifest fetched cold
	// for a client are fetched at once in the background (prefetch.go);
	// 0 prefetches nothing.
	PrefetchConcurrency int
}

// Mirror answers for content: from the store, else from peers, else from
// the upstream. Its methods are safe for concurrent use.
type Mirror struct {
	store *cache.Store
	peers Peers
	up    Upstream
	cfg   Config
	log   *slog.Logger
	m     *metrics.Metrics

	tags      singleflight.Group // one revalidation per tag at a time
	manifests singleflight.Group // one manifest fetch per digest at a time

	// Prefetch (prefetch.go): pf queues blobs in manifest order for at
	// most PrefetchConcurrency workers; ctx ends with Close; wg counts the
	// workers.
	pf     prefetchQueue
	yield  clientFirst
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Mirror over store that asks peers, then up. Pass NoPeers{}
// (or nil) when there are none. New starts no goroutines; prefetches
// start some, which Close waits for.
func New(store *cache.Store, peers Peers, up Upstream, cfg Config) *Mirror {
	if cfg.TagTTL <= 0 {
		cfg.TagTTL = config.Defaults().TagTTL.D()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if peers == nil {
		peers = NoPeers{}
	}
	m := &Mirror{store: store, peers: peers, up: up, cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.yield.init()
	return m
}

// Served notes, for the audit record, that a client was sent manifest d
// of repo (asked for by tag, or by digest when tag is "") or, with blob,
// blob d. The handler calls it once the answer is known to be a success:
// 404s and blob HEADs are not content served. It takes one short lock.
func (m *Mirror) Served(repo oci.Repo, tag string, d digest.Digest, blob bool) {
	if blob {
		m.store.RecordBlob(repo, d)
	} else {
		m.store.RecordManifest(repo, tag, d)
	}
}

// Blob returns blob req.Digest of req.Repo: the committed file on a hit,
// else a reader of the fill that downloads it (joined if one is under
// way). The caller closes it. Errors wrap oci.ErrBlobUnknown when no
// source has it.
//
// The store is one digest namespace, but a blob is served through a
// repository only when it is known to be that repository's (cache.Known):
// bytes on disk for another repository are no reason. Otherwise the
// repository's own sources are asked first, as on a miss (vouch), so the
// answer, and its timing, come from them whether or not the bytes are here.
func (m *Mirror) Blob(ctx context.Context, req oci.Request) (*cache.Blob, error) {
	repo, d := req.Repo, req.Digest
	known := m.store.Known(repo, d)
	if !known && m.store.Has(d) {
		if err := m.vouch(ctx, req); err != nil {
			return nil, err
		}
		known = true
	}
	if known {
		if f, size, err := m.store.Open(d); err == nil {
			m.m.Hit("blob", repo.Registry)
			return cache.Committed(f, size), nil
		}
	}
	m.m.Miss("blob", repo.Registry)
	if req.Via == oci.ViaPeerHolder {
		// A holder answers only what it can serve now; it never waits, so
		// two nodes asking each other cannot wait on each other.
		b, ok := m.store.Join(ctx, d)
		if ok && known {
			return b, nil
		}
		if ok {
			b.Close()
		}
		return nil, fmt.Errorf("blob %s: %w", d, oci.ErrBlobUnknown)
	}
	// The size a manifest of repo gave d binds the fill's source, as for a
	// prefetch: a source that declares another size, or sends more, fails
	// at once instead of at the digest check after all it sent.
	meta := cache.FillMeta{Repo: repo.String(), Origin: repo.Registry, Vouched: known, Size: m.store.KnownSize(repo, d)}
	hint := meta.Size
	if hint == 0 {
		hint = req.RelaySize // the asking peer's: it only picks how the fill starts
	}
	meta.Ranges = m.ranges(req, hint)
	b, err := m.store.Fill(ctx, d, meta, m.yield.client(m.opener(req)))
	if errors.Is(err, cache.ErrNotVouched) {
		// Being fetched (or just stored) for another repository.
		if err := m.vouch(ctx, req); err != nil {
			return nil, err
		}
		meta.Vouched = true
		b, err = m.store.Fill(ctx, d, meta, m.yield.client(m.opener(req)))
	}
	if err == nil {
		m.yield.asked(d) // a prefetch's fill that this request joined is a client's now
	}
	return b, err
}

// vouch asks req.Repo's sources for the blob as a fill would (peers for a
// client, then the upstream) and closes the answer at once: it only learns
// whether the blob is that repository's, which the opener records. A
// holder has no sources to ask.
func (m *Mirror) vouch(ctx context.Context, req oci.Request) error {
	if req.Via == oci.ViaPeerHolder {
		return fmt.Errorf("blob %s: %w", req.Digest, oci.ErrBlobUnknown)
	}
	rc, _, _, err := m.opener(req)(ctx, 0)
	if err != nil {
		return err
	}
	rc.Close()
	return nil
}

// markKnown records that a source of repo has d (and, given a manifest's
// bytes, what it names). A failure to record costs a later vouch.
func (m *Mirror) markKnown(repo oci.Repo, d digest.Digest, manifest []byte) {
	var err error
	if manifest != nil {
		err = m.store.MarkManifestKnown(repo, d, manifest)
	} else {
		err = m.store.MarkKnown(repo, d)
	}
	if err != nil {
		m.log.Warn("record content of repository", "repo", repo, "digest", d, "err", err)
	}
}

// opener is where a fill of req.Digest gets its bytes: peers first (for
// clients and relay requests), then the upstream. Called again on a broken stream, it starts
// over at the peers, which skip one that just failed. It runs under the
// store's context, not the request's, and keeps the request itself.
func (m *Mirror) opener(req oci.Request) cache.Opener {
	d := req.Digest
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		if req.Via == oci.ViaClient || req.Via == oci.ViaPeerRelay { // a relay parent fills down its own plan
			rc, size, err := m.peers.FetchBlob(ctx, req, offset)
			if err == nil {
				m.markKnown(req.Repo, d, nil) // the peer has it for req.Repo: it checks, as this node does
				return rc, size, metrics.SourcePeer, nil
			}
			if ctx.Err() != nil {
				return nil, 0, "", ctx.Err()
			}
			if !errors.Is(err, ErrNoPeer) {
				m.log.Debug("peers miss", "digest", d, "err", err)
			}
		}
		rc, size, err := m.up.FetchBlob(ctx, req, offset)
		if err == nil {
			m.markKnown(req.Repo, d, nil)
		}
		return rc, size, metrics.SourceUpstream, err
	}
}

// staleAllowed reports whether a cached tag may answer after upstream err:
// anything but the upstream saying the tag or repository is gone.
func staleAllowed(err error) bool {
	return !errors.Is(err, oci.ErrManifestUnknown) && !errors.Is(err, oci.ErrNameUnknown) &&
		!errors.Is(err, context.Canceled)
}
