package mirror

import (
	"context"
	"errors"
	"fmt"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// Manifest is a manifest's descriptor and, for GET, its bytes.
type Manifest struct {
	oci.Descriptor
	Data []byte // nil for a HEAD answered without the bytes
}

// Manifest resolves req.Reference (a tag or digest) of req.Repo. For a
// HEAD (req.Head) the bytes are not needed: a tag answers from its cached
// mapping alone. Errors wrap oci.ErrManifestUnknown, oci.ErrUnavailable and
// the other oci errors.
func (m *Mirror) Manifest(ctx context.Context, req oci.Request) (Manifest, error) {
	man, err := m.manifest(ctx, req)
	if err == nil && man.Data != nil {
		// Bytes served through a repository came from its sources or were
		// known to be its own; what they name is its own too. A digest
		// learned by HEAD alone is not: its bytes are fetched from the
		// repository before the store's copy is served under its name.
		m.markKnown(req.Repo, man.Digest, man.Data)
	}
	return man, err
}

func (m *Mirror) manifest(ctx context.Context, req oci.Request) (Manifest, error) {
	if req.Digest != "" {
		return m.manifestByDigest(ctx, req)
	}
	if want, ok := m.cfg.Pins[cache.TagKey(req.Repo.Registry, req.Repo.Name, req.Reference)]; ok {
		return m.pinned(ctx, req, want)
	}
	desc, data, err := m.resolveTag(ctx, req)
	if err != nil || req.Head || data != nil {
		return Manifest{Descriptor: desc, Data: data}, err
	}
	return m.manifestByDigest(ctx, req.WithReference(desc.Digest.String()))
}

// manifestByDigest answers req.Digest from the store when it is known to
// be req.Repo's (see Blob), else fetches the manifest from that
// repository's sources once however many ask, verifies it and stores it.
func (m *Mirror) manifestByDigest(ctx context.Context, req oci.Request) (Manifest, error) {
	d := req.Digest
	if m.store.Known(req.Repo, d) {
		if data, info, err := m.store.ReadAll(d); err == nil {
			m.m.Hit("manifest", req.Repo.Registry)
			return Manifest{Descriptor: oci.Descriptor{MediaType: info.MediaType, Digest: d, Size: int64(len(data))}, Data: data}, nil
		}
	}
	m.m.Miss("manifest", req.Repo.Registry)
	if req.Via == oci.ViaPeerHolder {
		return Manifest{}, fmt.Errorf("manifest %s: %w", d, oci.ErrManifestUnknown)
	}
	// Keyed by repository too: another repository's fetch of the same
	// digest says nothing about this one's.
	v, err, _ := m.manifests.Do(req.Repo.String()+"@"+string(d), func() (any, error) {
		return m.fetchManifest(context.WithoutCancel(ctx), req)
	})
	if err != nil {
		return Manifest{}, err
	}
	return v.(Manifest), nil
}

// fetchManifest fetches and keeps the manifest req names by digest, then
// prefetches its blobs.
func (m *Mirror) fetchManifest(ctx context.Context, req oci.Request) (Manifest, error) {
	man, err := m.fetchManifestFrom(ctx, req)
	if err == nil {
		m.prefetch(req, man.MediaType, man.Data)
	}
	return man, err
}

// fetchManifestFrom fetches the manifest from the peers (for a client) or
// else the upstream, and keeps it.
func (m *Mirror) fetchManifestFrom(ctx context.Context, req oci.Request) (Manifest, error) {
	d := req.Digest
	if req.Via == oci.ViaClient {
		desc, data, err := m.peers.FetchManifest(ctx, req)
		if err == nil && digest.FromBytes(data) == d {
			if mt, err := oci.CheckManifest(desc.MediaType, data); err == nil {
				return m.keepManifest(req, d, mt, data)
			}
			m.log.Warn("peer manifest refused", "digest", d, "err", err)
		}
	}
	desc, data, err := m.up.GetManifest(ctx, req)
	if err != nil {
		return Manifest{}, err
	}
	return m.keepManifest(req, d, desc.MediaType, data)
}

// keepManifest verifies data against d and stores it: a manifest fetched
// cold (a miss) for req. Its caller prefetches its blobs (Mirror.prefetch)
// once everything the client's answer waits for is done: started sooner,
// the prefetch's transfers and disk writes would slow that answer (a cold
// tag's mapping is stored, and synced, after its manifest).
func (m *Mirror) keepManifest(req oci.Request, d digest.Digest, mediaType string, data []byte) (Manifest, error) {
	if got := d.Algorithm().FromBytes(data); got != d {
		return Manifest{}, fmt.Errorf("manifest %s: got %s: %w", d, got, oci.ErrDigestMismatch)
	}
	if mediaType == "" {
		mediaType = oci.SniffMediaType(data)
	}
	if err := m.store.Put(d, mediaType, data); err != nil {
		m.log.Warn("store manifest", "digest", d, "err", err)
	}
	return Manifest{Descriptor: oci.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, Data: data}, nil
}

// resolveTag returns the digest a tag points at. Within the TTL the cached
// mapping answers with no upstream request. After it, the tag's owner among
// the peers or the upstream is asked once (HEAD, which Docker Hub does not
// count as a pull); if that fails, the cached mapping answers
// (stale-if-error). A tag never seen is fetched with GET, keeping the bytes.
func (m *Mirror) resolveTag(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error) {
	repo, tag := req.Repo, req.Reference
	key := cache.TagKey(repo.Registry, repo.Name, tag)
	cached, cerr := m.store.Tag(key)
	if cerr == nil && m.cfg.Now().Sub(cached.Checked) < m.cfg.TagTTL {
		m.m.Hit("tag", repo.Registry)
		return tagDesc(cached), nil, nil
	}
	if req.Via == oci.ViaPeerHolder {
		return oci.Descriptor{}, nil, fmt.Errorf("tag %s: %w", tag, oci.ErrManifestUnknown)
	}
	m.m.Miss("tag", repo.Registry)
	type answer struct {
		desc oci.Descriptor
		data []byte
	}
	v, err, _ := m.tags.Do(key, func() (any, error) {
		ctx := context.WithoutCancel(ctx)
		var have *cache.Tag // the cached mapping, when its content is stored
		if cerr == nil && m.store.Has(cached.Digest) {
			have = &cached
		}
		desc, data, err := m.revalidate(ctx, req, have)
		if err != nil {
			return nil, err
		}
		t := cache.Tag{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Checked: m.cfg.Now()}
		if err := m.store.SetTag(key, t); err != nil {
			m.log.Warn("store tag", "repo", repo, "tag", tag, "err", err)
		}
		if data != nil { // fetched cold (revalidate kept it): the answer is ready
			m.prefetch(req, desc.MediaType, data)
		}
		return answer{desc, data}, nil
	})
	if err == nil {
		a := v.(answer)
		return a.desc, a.data, nil
	}
	if cerr == nil && errors.Is(err, oci.ErrOffline) { // offline: the store's answer is the answer
		return tagDesc(cached), nil, nil
	}
	if cerr == nil && staleAllowed(err) {
		m.m.Stale("tag")
		m.log.Warn("serve stale tag", "repo", repo, "tag", tag, "digest", cached.Digest, "err", err)
		return tagDesc(cached), nil, nil
	}
	return oci.Descriptor{}, nil, err
}

// revalidate asks where the tag points now: the tag's owner among the
// peers (never for a pinned tag), else the upstream with HEAD when the
// content of the cached mapping (have) is stored, or GET (keeping the
// bytes) when it is not. A HEAD naming another digest than have's is
// confirmed before it is believed (confirm).
func (m *Mirror) revalidate(ctx context.Context, req oci.Request, have *cache.Tag) (oci.Descriptor, []byte, error) {
	if req.Via == oci.ViaClient && !m.store.HasPin(req.Repo.String()+":"+req.Reference) {
		desc, err := m.peers.ResolveTag(ctx, req)
		if err == nil && desc.Digest != "" {
			return desc, nil, nil
		}
	}
	if have != nil {
		desc, err := m.up.HeadManifest(ctx, req)
		switch {
		case err != nil:
			return oci.Descriptor{}, nil, err
		case desc.Digest == have.Digest:
			return desc, nil, nil
		case desc.Digest != "":
			return m.confirm(ctx, req, desc.Digest)
		}
	}
	desc, data, err := m.up.GetManifest(ctx, req)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	d := desc.Digest
	if d == "" {
		d = digest.FromBytes(data)
	}
	man, err := m.keepManifest(req, d, desc.MediaType, data)
	if errors.Is(err, oci.ErrDigestMismatch) {
		return oci.Descriptor{}, nil, fmt.Errorf("tag %s: upstream digest header disagrees with its bytes: %w", req.Reference, err)
	}
	return man.Descriptor, man.Data, err
}

// confirm checks a tag's new digest d, learned by HEAD, with a GET of d
// from the same registry: the bytes must hash to d and be a manifest. So a
// HEAD cannot point a tag at content this node holds from elsewhere (another
// registry's, a peer's). The manifest is kept: a client asks for it next.
// A registry that names a digest it then does not serve answers
// nonsense: the error wraps oci.ErrBadUpstream, and the last confirmed
// mapping keeps answering (stale-if-error).
func (m *Mirror) confirm(ctx context.Context, req oci.Request, d digest.Digest) (oci.Descriptor, []byte, error) {
	desc, data, err := m.up.GetManifest(ctx, req.WithReference(d.String()))
	if errors.Is(err, oci.ErrManifestUnknown) {
		err = fmt.Errorf("tag %s: the upstream's HEAD names %s, which it does not serve: %w", req.Reference, d, oci.ErrBadUpstream)
	}
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	man, err := m.keepManifest(req, d, desc.MediaType, data)
	return man.Descriptor, man.Data, err
}

func tagDesc(t cache.Tag) oci.Descriptor {
	return oci.Descriptor{MediaType: t.MediaType, Digest: t.Digest, Size: t.Size}
}

// pinned answers tag req (a policy pin) as digest want, and only so:
// the manifest comes by digest (from the store, else peers or upstream),
// and after the tag TTL the upstream is asked where the tag points, only
// to log and count a move, never to follow it.
func (m *Mirror) pinned(ctx context.Context, req oci.Request, want digest.Digest) (Manifest, error) {
	man, err := m.manifestByDigest(ctx, req.WithReference(want.String()))
	if err != nil {
		return Manifest{}, err
	}
	repo, tag := req.Repo, req.Reference
	key := cache.TagKey(repo.Registry, repo.Name, tag)
	if t, err := m.store.Tag(key); err == nil && t.Digest == want && m.cfg.Now().Sub(t.Checked) < m.cfg.TagTTL {
		return man, nil
	}
	_, _, _ = m.tags.Do(key, func() (any, error) {
		desc, _, err := m.revalidate(context.WithoutCancel(ctx), req, &cache.Tag{Digest: want})
		switch {
		case err != nil:
			m.log.Debug("pinned tag not checked upstream", "repo", repo, "tag", tag, "err", err)
		case desc.Digest != want:
			m.m.PolicyTagMoved(repo.Registry)
			m.log.Warn("upstream moved a pinned tag; serving the pinned digest", "repo", repo, "tag", tag, "pinned", want, "upstream", desc.Digest)
		}
		t := cache.Tag{Digest: want, MediaType: man.MediaType, Size: man.Size, Checked: m.cfg.Now()}
		if err := m.store.SetTag(key, t); err != nil {
			m.log.Warn("store tag", "repo", repo, "tag", tag, "err", err)
		}
		return nil, nil
	})
	return man, nil
}
