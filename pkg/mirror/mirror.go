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
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

// Config tunes a Mirror. The zero value is ready to use.
type Config struct {
	TagTTL  time.Duration    // how long a tag's digest is trusted; 0 means 60s
	Logger  *slog.Logger     // nil discards
	Metrics *metrics.Metrics // nil counts nothing
	Now     func() time.Time // nil means time.Now
	// Pins are policy pins by tag key (cache.TagKey): such a tag is served
	// only as its digest, whatever the upstream says (see pinned).
	Pins map[string]digest.Digest
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
}

// New returns a Mirror over store that asks peers, then up. Pass NoPeers{}
// (or nil) when there are none. New starts no goroutines.
func New(store *cache.Store, peers Peers, up Upstream, cfg Config) *Mirror {
	if cfg.TagTTL <= 0 {
		cfg.TagTTL = 60 * time.Second
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
	return &Mirror{store: store, peers: peers, up: up, cfg: cfg, log: cfg.Logger, m: cfg.Metrics}
}

// Blob returns blob req.Digest of req.Repo: the committed file on a hit,
// else a reader of the fill that downloads it (joined if one is under
// way). The caller closes it. Errors wrap oci.ErrBlobUnknown when no
// source has it.
func (m *Mirror) Blob(ctx context.Context, req oci.Request) (*cache.Blob, error) {
	repo, d := req.Repo, req.Digest
	if req.Via == oci.ViaClient {
		m.store.RecordBlob(repo, d) // in memory; the audit record of what clients got
	}
	if f, size, err := m.store.Open(d); err == nil {
		m.m.Hit("blob", repo.Registry)
		return cache.Committed(f, size), nil
	}
	m.m.Miss("blob", repo.Registry)
	if req.Via == oci.ViaPeerHolder {
		// A holder answers only what it can serve now; it never waits, so
		// two nodes asking each other cannot wait on each other.
		if b, ok := m.store.Join(ctx, d); ok {
			return b, nil
		}
		return nil, fmt.Errorf("blob %s: %w", d, oci.ErrBlobUnknown)
	}
	return m.store.Fill(ctx, d, cache.FillMeta{Repo: repo.String()}, m.opener(req))
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
		return rc, size, metrics.SourceUpstream, err
	}
}

// staleAllowed reports whether a cached tag may answer after upstream err:
// anything but the upstream saying the tag or repository is gone.
func staleAllowed(err error) bool {
	return !errors.Is(err, oci.ErrManifestUnknown) && !errors.Is(err, oci.ErrNameUnknown) &&
		!errors.Is(err, context.Canceled)
}
