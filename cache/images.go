package cache

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// ImageEntry is one image the store holds now, for the audit list: a
// cached tag, or a pin by digest that no tag names.
type ImageEntry struct {
	Registry  string        `json:"registry,omitempty"`
	Name      string        `json:"name,omitempty"`
	Tag       string        `json:"tag,omitempty"` // "" for an image held by digest
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	// Size and Blobs count the stored content the image reaches: every
	// platform of an index, configs, layers and referrers; Missing counts
	// what its manifests name and the store lacks (platforms never pulled).
	Size    int64 `json:"size"`
	Blobs   int   `json:"blobs"`
	Missing int   `json:"missing,omitempty"`
	Pinned  bool  `json:"pinned"`
	// Checked is when the upstream last confirmed the tag.
	Checked time.Time `json:"checked,omitzero"`
	// Pulls and LastPulled are what clients were served of it (by tag, or
	// by digest for an image held by digest).
	Pulls      int64     `json:"pulls"`
	LastPulled time.Time `json:"lastPulled,omitzero"`
}

// Images lists what the store holds now, one entry per cached tag (the
// cosign sha256-<hex>.sig tags are referrers of their image, not images)
// and per pinned digest no tag names, sorted by name. It reads every
// manifest: seconds on a large store.
func (s *Store) Images() ([]ImageEntry, error) {
	if err := s.flushAudit(); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	s.evictMu.Lock() // a consistent view: no eviction or gc meanwhile
	defer s.evictMu.Unlock()
	sc, err := s.scan()
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	audit, err := readAudit(s.db)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	pinned := sc.pinned(s)
	var out []ImageEntry
	tagged := map[digest.Digest]bool{}
	for key, t := range sc.tags {
		repo, tag, ok := splitTagKey(key)
		if !ok || cosignTag.MatchString(tag) {
			continue
		}
		reg, name, _ := strings.Cut(repo, "/")
		e := ImageEntry{Registry: reg, Name: name, Tag: tag, Digest: t.Digest, MediaType: t.MediaType, Checked: t.Checked}
		tagged[t.Digest] = true
		out = append(out, e)
	}
	for _, p := range sc.pins {
		if p.Tag != "" || tagged[p.Digest] {
			continue
		}
		e := ImageEntry{Digest: p.Digest}
		if repo, _, ok := strings.Cut(p.Ref, "@"); ok {
			e.Registry, e.Name, _ = strings.Cut(repo, "/")
		}
		tagged[p.Digest] = true
		out = append(out, e)
	}
	for i := range out {
		e := &out[i]
		set := map[digest.Digest]bool{}
		var missing []digest.Digest
		sc.mark(s, e.Digest, set, &missing, 0)
		for d := range set {
			if info, ok := sc.infos[d]; ok {
				e.Blobs++
				e.Size += info.Size
			}
		}
		e.Missing, e.Pinned = len(missing), pinned[e.Digest]
		if info, ok := sc.infos[e.Digest]; ok && e.MediaType == "" {
			e.MediaType = info.MediaType
		}
		e.Pulls, e.LastPulled = pullsOf(audit, *e)
	}
	slices.SortFunc(out, func(a, b ImageEntry) int {
		return strings.Compare(a.Registry+"/"+a.Name+":"+a.Tag+"@"+string(a.Digest), b.Registry+"/"+b.Name+":"+b.Tag+"@"+string(b.Digest))
	})
	return out, nil
}

// pullsOf sums what the audit record says clients were served of e.
func pullsOf(audit []AuditRepo, e ImageEntry) (int64, time.Time) {
	var n int64
	var last time.Time
	for _, r := range audit {
		if r.Registry != e.Registry || r.Name != e.Name {
			continue
		}
		entries := r.Manifests
		if e.Tag != "" {
			entries = r.Tags
		}
		for _, a := range entries {
			if a.Tag == e.Tag && (e.Tag != "" || a.Digest == e.Digest) {
				n += a.Count
				if a.Last.After(last) {
					last = a.Last
				}
			}
		}
	}
	return n, last
}
