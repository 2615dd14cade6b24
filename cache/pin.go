package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Pinning. A pin names an image (or any content) the store must keep:
// eviction and gc never remove what a pin reaches. A pin is a root, not a
// list of digests: what it reaches is worked out each time from the files,
// so a platform or a signature stored after the pin is kept too.
//
//	pins/  <ref>  → Pin
//
// From a pin's root the store follows every manifest of an index, each
// manifest's config and layers (blobs of an artifact), and the referrers
// of each manifest it reaches: manifests whose subject is that digest, and
// the cosign tag schema's "sha256-<hex>.sig" (.att, .sbom) tags of the
// same repository. A pin by tag follows the tag as it moves, and keeps the
// digest it had when pinned as well.

var bucketPins = []byte("pins")

// Pin is one pinned image.
type Pin struct {
	// Ref is the pin's name and key: registry/name:tag or
	// registry/name@digest, or a bare digest.
	Ref string `json:"ref"`
	// Tag is the tag key (TagKey) of a pin by tag; "" for pins by digest.
	Tag string `json:"tag,omitempty"`
	// Digest is the root: the content the ref named when it was pinned.
	Digest  digest.Digest `json:"digest"`
	Source  string        `json:"source,omitempty"` // who pinned it: cli, api, preload, import
	Created time.Time     `json:"created"`
}

// PinSourceMark is the Source of the pins Pins lists for content Pin
// marked (import pins so).
const PinSourceMark = "mark"

// PinStatus is a pin with what it reaches now.
type PinStatus struct {
	Pin
	Current digest.Digest   `json:"current,omitempty"` // the tag's digest now, when it moved since the pin
	Blobs   int             `json:"blobs"`             // stored content the pin reaches
	Bytes   int64           `json:"bytes"`             // their size
	Missing []digest.Digest `json:"missing,omitempty"` // content its manifests name that is not stored
}

// AddPin records p (replacing a pin of the same Ref) and returns what it
// reaches. The root must be stored: the error wraps ErrNotFound when it is
// not. Content its manifests name that is not stored (platforms never
// pulled) is listed in Missing and kept once it arrives. AddPin waits for
// an eviction or gc under way to end, so none removes what it pins.
func (s *Store) AddPin(p Pin) (PinStatus, error) {
	if err := p.Digest.Validate(); err != nil {
		return PinStatus{}, fmt.Errorf("pin %s: digest %q: %w", p.Ref, p.Digest, err)
	}
	if p.Ref == "" {
		p.Ref = p.Digest.String()
	}
	if p.Created.IsZero() {
		p.Created = time.Now().UTC()
	}
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	if !s.Has(p.Digest) {
		return PinStatus{}, fmt.Errorf("pin %s: %s: %w", p.Ref, p.Digest, ErrNotFound)
	}
	v, err := json.Marshal(p)
	if err != nil {
		return PinStatus{}, err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPins).Put([]byte(p.Ref), v)
	})
	if err != nil {
		return PinStatus{}, fmt.Errorf("pin %s: %w", p.Ref, err)
	}
	sc, err := s.scan()
	if err != nil {
		return PinStatus{}, fmt.Errorf("pin %s: %w", p.Ref, err)
	}
	s.notePinned(sc, sc.pinned(s))
	// A pin under a repository's name says the content is that
	// repository's (the operator, preload or import said so).
	key := p.Tag
	if name, _, ok := strings.Cut(p.Ref, "@"); ok {
		key = name + ":"
	}
	if repo, ok := repoOfKey(key); ok {
		if err := s.seedManifest(repo, p.Digest, 2); err != nil {
			return PinStatus{}, fmt.Errorf("pin %s: %w", p.Ref, err)
		}
	}
	return sc.status(s, p), nil
}

// RemovePin drops the pin named ref, or, when ref is a digest, every pin
// rooted at that digest. Its content becomes evictable (unless another pin
// or a cached tag reaches it). The error wraps ErrNotFound when no pin
// matched.
func (s *Store) RemovePin(ref string) ([]Pin, error) {
	var gone []Pin
	err := s.db.Update(func(tx *bolt.Tx) error {
		gone = nil
		b := tx.Bucket(bucketPins)
		var keys [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var p Pin
			if json.Unmarshal(v, &p) != nil {
				return nil
			}
			if string(k) == ref || p.Digest.String() == ref {
				keys = append(keys, slices.Clone(k))
				gone = append(gone, p)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("unpin %s: %w", ref, err)
	}
	if len(gone) == 0 {
		return nil, fmt.Errorf("unpin %s: no such pin: %w", ref, ErrNotFound)
	}
	s.refreshPinned()
	return gone, nil
}

// Pins returns every pin with what it reaches now, sorted by Ref.
func (s *Store) Pins() ([]PinStatus, error) {
	sc, err := s.scan()
	if err != nil {
		return nil, fmt.Errorf("pins: %w", err)
	}
	out := make([]PinStatus, 0, len(sc.pins))
	for _, p := range append(slices.Clone(sc.pins), sc.topFlagged(s)...) {
		out = append(out, sc.status(s, p))
	}
	slices.SortFunc(out, func(a, b PinStatus) int { return strings.Compare(a.Ref, b.Ref) })
	return out, nil
}

// PinnedSet returns every stored digest a pin reaches.
func (s *Store) PinnedSet() (map[digest.Digest]bool, error) {
	sc, err := s.scan()
	if err != nil {
		return nil, fmt.Errorf("pinned set: %w", err)
	}
	return sc.pinned(s), nil
}

// Pin marks committed content d pinned: it and everything it reaches (see
// AddPin) are kept until Unpin. Unlike AddPin it names nothing, so
// import can pin every blob it brings in, in any order; Pins lists such a
// digest only when no other pin reaches it. The error wraps ErrNotFound
// when d is not in the store.
func (s *Store) Pin(d digest.Digest) error {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	return s.setPinned(d, true) // fillRoom learns of it at the next eviction or gc
}

// Unpin drops the mark Pin set on d and every pin rooted at d. The error
// wraps ErrNotFound when d was pinned neither way.
func (s *Store) Unpin(d digest.Digest) error {
	info, ierr := s.Info(d)
	flagged := ierr == nil && info.Pinned
	if flagged {
		if err := s.setPinned(d, false); err != nil {
			return err
		}
	}
	_, err := s.RemovePin(d.String())
	if flagged && errors.Is(err, ErrNotFound) {
		s.refreshPinned()
		return nil
	}
	return err
}

func (s *Store) setPinned(d digest.Digest, pinned bool) error {
	var info Info
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		v := b.Get([]byte(d))
		if v == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(v, &info); err != nil {
			return err
		}
		info.Pinned = pinned
		nv, err := json.Marshal(info)
		if err != nil {
			return err
		}
		return b.Put([]byte(d), nv)
	})
	if err != nil {
		return fmt.Errorf("pin %s: %w", d, err)
	}
	info.Digest = d
	s.meta.addInfo(info)
	return nil
}

// indexScan is one consistent read of the index: what eviction, gc, pins
// and the listing work from.
type indexScan struct {
	infos map[digest.Digest]Info
	tags  map[string]Tag // by tag key
	pins  []Pin          // sorted by Ref
	// flagged is the content Pin marked: roots like pins, listed by Pins
	// only where no pin or other mark reaches them.
	flagged []digest.Digest
	refs    map[digest.Digest][]digest.Digest
}

// cosignTag matches the tags of the cosign schema that attach content to
// the manifest named in them: sha256-<hex>.sig, .att, .sbom.
var cosignTag = regexp.MustCompile(`^(sha256)-([0-9a-f]{64})\.(sig|att|sbom)$`)

func (s *Store) scan() (*indexScan, error) {
	sc := &indexScan{infos: map[digest.Digest]Info{}, tags: map[string]Tag{}, refs: map[digest.Digest][]digest.Digest{}}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			var info Info
			if json.Unmarshal(v, &info) != nil {
				return nil // an unreadable entry is left to verify
			}
			info.Digest = digest.Digest(k)
			sc.infos[info.Digest] = info
			if info.Subject != "" {
				sc.refs[info.Subject] = append(sc.refs[info.Subject], info.Digest)
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			var t Tag
			if json.Unmarshal(v, &t) != nil {
				return nil
			}
			sc.tags[string(k)] = t
			_, tag, _ := splitTagKey(string(k))
			if m := cosignTag.FindStringSubmatch(tag); m != nil {
				subject := digest.NewDigestFromEncoded(digest.Algorithm(m[1]), m[2])
				sc.refs[subject] = append(sc.refs[subject], t.Digest)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketPins).ForEach(func(_, v []byte) error {
			var p Pin
			if json.Unmarshal(v, &p) == nil {
				sc.pins = append(sc.pins, p)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for _, info := range sc.infos {
		if info.Pinned {
			sc.flagged = append(sc.flagged, info.Digest)
		}
	}
	slices.SortFunc(sc.pins, func(a, b Pin) int { return strings.Compare(a.Ref, b.Ref) })
	return sc, nil
}

// splitTagKey splits a TagKey into its repository (registry/name) and tag.
func splitTagKey(key string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(key, ':')
	if i < 0 || strings.ContainsRune(key[i:], '/') {
		return "", "", false
	}
	return key[:i], key[i+1:], true
}

// roots returns the digests p keeps: its digest, and its tag's now.
func (sc *indexScan) roots(p Pin) []digest.Digest {
	roots := []digest.Digest{p.Digest}
	if t, ok := sc.tags[p.Tag]; ok && p.Tag != "" && t.Digest != p.Digest {
		roots = append(roots, t.Digest)
	}
	return roots
}

// pinned marks what every pin and mark reaches.
func (sc *indexScan) pinned(s *Store) map[digest.Digest]bool {
	set := map[digest.Digest]bool{}
	for _, p := range sc.pins {
		for _, d := range sc.roots(p) {
			sc.mark(s, d, set, nil, 0)
		}
	}
	for _, d := range sc.flagged {
		sc.mark(s, d, set, nil, 0)
	}
	return set
}

// topFlagged is the marked content no pin and no other marked content
// reaches: the images Pin marked, as Pins lists them.
func (sc *indexScan) topFlagged(s *Store) []Pin {
	reached := map[digest.Digest]bool{}
	for _, p := range sc.pins {
		for _, d := range sc.roots(p) {
			sc.mark(s, d, reached, nil, 0)
		}
	}
	for _, d := range sc.flagged {
		if m, ok := s.readRefs(d, sc.infos[d]); ok {
			sub := map[digest.Digest]bool{}
			for _, c := range m.Manifests {
				sc.mark(s, c.Digest, sub, nil, 1)
			}
			for _, c := range leaves(&m) {
				sub[c] = true
			}
			for r := range sub {
				reached[r] = true
			}
		}
		for _, r := range sc.refs[d] {
			sc.mark(s, r, reached, nil, 1)
		}
	}
	var out []Pin
	for _, d := range sc.flagged {
		if !reached[d] {
			out = append(out, Pin{Ref: d.String(), Digest: d, Source: PinSourceMark})
		}
	}
	return out
}

func (sc *indexScan) status(s *Store, p Pin) PinStatus {
	set := map[digest.Digest]bool{}
	var missing []digest.Digest
	roots := sc.roots(p)
	for _, d := range roots {
		sc.mark(s, d, set, &missing, 0)
	}
	st := PinStatus{Pin: p, Missing: missing}
	if len(roots) > 1 {
		st.Current = roots[1]
	}
	for d := range set {
		if info, ok := sc.infos[d]; ok {
			st.Blobs++
			st.Bytes += info.Size
		}
	}
	return st
}

// mark adds d to set and, when d is a stored manifest or index, what it
// names and its referrers. Digests named but not stored go to missing.
func (sc *indexScan) mark(s *Store, d digest.Digest, set map[digest.Digest]bool, missing *[]digest.Digest, depth int) {
	if set[d] || d.Validate() != nil {
		return
	}
	set[d] = true
	if _, ok := sc.infos[d]; !ok {
		if missing != nil {
			*missing = append(*missing, d)
		}
		return
	}
	if depth > 8 {
		return // an index of indexes this deep is no image
	}
	for _, r := range sc.refs[d] {
		sc.mark(s, r, set, missing, depth+1)
	}
	m, ok := s.readRefs(d, sc.infos[d])
	if !ok {
		return
	}
	for _, c := range m.Manifests {
		sc.mark(s, c.Digest, set, missing, depth+1)
	}
	for _, c := range leaves(&m) {
		if set[c] || c.Validate() != nil {
			continue
		}
		set[c] = true
		if _, ok := sc.infos[c]; !ok && missing != nil {
			*missing = append(*missing, c)
		}
		for _, r := range sc.refs[c] { // a signed layer, rare but possible
			sc.mark(s, r, set, missing, depth+1)
		}
	}
}

// HasPin reports whether a pin named ref (registry/name:tag,
// registry/name@digest or a digest) exists. It reads the index: call it
// once per decision, not per byte.
func (s *Store) HasPin(ref string) bool {
	found := false
	_ = s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(bucketPins).Get([]byte(ref)) != nil
		return nil
	})
	return found
}
