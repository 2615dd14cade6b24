package airgap

import (
	"errors"
	"fmt"

	"github.com/berth-registry/berth/cache"
	"github.com/opencontainers/go-digest"
)

// PinRef pins image ref (alpine:3.20, registry.k8s.io/pause@sha256:...) in
// s under its full name, so eviction and gc keep the whole image: every
// platform, config, layer and referrer. A pin by tag follows the tag as it
// moves and keeps the digest it named. d, when set, is the digest the
// caller resolved (berth preload); else ref is resolved from the store. The
// error wraps cache.ErrNotFound when the store lacks the image.
func PinRef(s *cache.Store, ref string, d digest.Digest, source string) (cache.PinStatus, error) {
	if bare, err := digest.Parse(ref); err == nil { // a digest alone: no repository to name
		return s.AddPin(cache.Pin{Ref: bare.String(), Digest: bare, Source: source})
	}
	repo, tag, rd, err := ParseRef(ref)
	if err != nil {
		return cache.PinStatus{}, err
	}
	p := cache.Pin{Digest: d, Source: source}
	if tag != "" {
		p.Ref, p.Tag = repo.String()+":"+tag, cache.TagKey(repo.Registry, repo.Name, tag)
	} else {
		p.Ref = repo.String() + "@" + rd.String()
		if d == "" {
			p.Digest = rd
		}
	}
	if p.Digest == "" {
		img, err := Resolve(s, ref)
		if err != nil {
			return cache.PinStatus{}, err
		}
		p.Digest = img.Digest
	}
	return s.AddPin(p)
}

// UnpinRef drops the pin of image ref, named as PinRef names it; a bare
// digest drops every pin rooted there and the mark an import set. The
// error wraps cache.ErrNotFound when nothing was pinned by that name.
func UnpinRef(s *cache.Store, ref string) error {
	if d, err := digest.Parse(ref); err == nil {
		return s.Unpin(d)
	}
	repo, tag, d, err := ParseRef(ref)
	if err != nil {
		return err
	}
	name := repo.String() + ":" + tag
	if tag == "" {
		name = repo.String() + "@" + d.String()
	}
	_, err = s.RemovePin(name)
	if errors.Is(err, cache.ErrNotFound) && d != "" {
		if uerr := s.Unpin(d); uerr == nil {
			return nil
		}
	}
	if err != nil {
		return fmt.Errorf("unpin %s: %w", ref, err)
	}
	return nil
}
