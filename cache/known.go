package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Which content belongs to which repository. The store is one digest
// namespace, but access is decided per repository: bytes fetched for a
// private repository must not be served through another one just because
// they are on disk. A (repository, digest) pair is known once a source of
// that repository vouched for it: its upstream or a peer served it under
// that name, or a manifest known for the repository references it.
//
//	known/  <registry>/<name>@<digest>  → the size a descriptor gave (8 bytes, big-endian), or 0x01
//
// Records are only added for content a source really had, and go with the
// content: removing a blob (eviction, gc, a bad file) deletes its pairs in
// the same transaction (forgetKnown), so known/ grows with what is stored,
// not with everything ever pulled. Content fetched again is vouched for
// again by the repository's sources; a manifest served again marks what it
// names again.

var bucketKnown = []byte("known")

// ErrNotVouched is Fill's answer when the content is on disk or being
// fetched for another repository and nothing says it belongs to the
// caller's: the caller asks its own sources first (FillMeta.Vouched).
var ErrNotVouched = errors.New("content not known for this repository")

func knownKey(repo oci.Repo, d digest.Digest) string { return repo.String() + "@" + string(d) }

// Known reports whether d is known to belong to repo. It reads memory, then
// the index; an index error counts as unknown.
func (s *Store) Known(repo oci.Repo, d digest.Digest) bool { return s.knownKey(repo.String(), d) }

// knownKey is Known of a repository written registry/name.
func (s *Store) knownKey(repo string, d digest.Digest) bool {
	_, found := s.knownPair(repo + "@" + string(d))
	return found
}

// knownPair looks the known/ pair k up in memory, then in the index, and
// returns the size recorded with it (0: none). A pair's value is written
// once and removed with its content (forgetKnown), so memory holds it as
// the index does.
func (s *Store) knownPair(k string) (size int64, found bool) {
	if n, ok := s.meta.known.Peek(k); ok { // a read lock: a hit takes no write lock
		return n, true
	}
	_ = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketKnown).Get([]byte(k))
		size, found = knownSizeOf(v), v != nil
		return nil
	})
	if found {
		s.meta.known.Add(k, size)
	}
	return size, found
}

// knownSizeOf is the size a known/ value records: 8 bytes, or none (0).
func knownSizeOf(v []byte) int64 {
	if len(v) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}

// MarkKnown records that every digest in ds belongs to repo. Pairs already
// marked cost a map lookup, or a read of the index when memory has lost
// them; only new ones are written, in one batched transaction, so a hit
// writes nothing and concurrent callers share a commit.
func (s *Store) MarkKnown(repo oci.Repo, ds ...digest.Digest) error {
	return s.markKnown(repo, ds, nil)
}

// markKnown is MarkKnown, recording with each new pair the size sizes
// gives its digest (a descriptor's), if any: see KnownSize.
func (s *Store) markKnown(repo oci.Repo, ds []digest.Digest, sizes map[digest.Digest]int64) error {
	var keys []string
	var vals [][]byte
	for _, d := range ds {
		if d == "" {
			continue
		}
		if k := knownKey(repo, d); !s.knownKey(repo.String(), d) {
			v := []byte{1}
			if n := sizes[d]; n > 0 {
				v = binary.BigEndian.AppendUint64(nil, uint64(n))
			}
			keys, vals = append(keys, k), append(vals, v)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKnown)
		for i, k := range keys {
			if v := b.Get([]byte(k)); v != nil {
				vals[i] = bytes.Clone(v) // recorded meanwhile: the first record stands, in memory too
				continue
			}
			if err := b.Put([]byte(k), vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, k := range keys {
		s.meta.known.Add(k, knownSizeOf(vals[i]))
	}
	return nil
}

// forgetKnown deletes in tx every known/ pair of the digests ds and
// returns their keys, for the caller to drop from memory once tx commits.
// It reads the whole bucket (keys lead with the repository), once per
// removal batch.
func forgetKnown(tx *bolt.Tx, ds []digest.Digest) ([]string, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	gone := make(map[string]bool, len(ds))
	for _, d := range ds {
		gone[string(d)] = true
	}
	b := tx.Bucket(bucketKnown)
	var keys []string
	err := b.ForEach(func(k, _ []byte) error {
		if i := strings.LastIndexByte(string(k), '@'); i >= 0 && gone[string(k[i+1:])] {
			keys = append(keys, string(k))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range keys { // not while ForEach walks the bucket
		if err := b.Delete([]byte(k)); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// KnownRepos lists the repositories d is known for (tests, berth ls).
func (s *Store) KnownRepos(d digest.Digest) ([]string, error) {
	var repos []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKnown).ForEach(func(k, _ []byte) error {
			if repo, dg, ok := strings.Cut(string(k), "@"); ok && dg == string(d) {
				repos = append(repos, repo)
			}
			return nil
		})
	})
	return repos, err
}

// MarkManifestKnown records that manifest d (whose bytes are data) belongs
// to repo, and with it what it names: an index's manifests, a manifest's
// config and layers (not its subject, which lives on its own). A client
// that may read a manifest may read what it is made of.
//
// A manifest marked so is not parsed again (a hit of it costs a map
// lookup) until a removal deletes known pairs: what it names may have
// gone with them, and is marked again.
func (s *Store) MarkManifestKnown(repo oci.Repo, d digest.Digest, data []byte) error {
	whole, gen := knownKey(repo, d), s.meta.knownGen.Load()
	if g, ok := s.meta.marked.Peek(whole); ok && g == gen {
		return nil
	}
	ds := []digest.Digest{d}
	sizes := map[digest.Digest]int64{d: int64(len(data))}
	if refs, ok := parseRefs(data); ok {
		for _, desc := range append(slices.Clone(refs.Manifests), refs.BlobDescriptors()...) {
			ds = append(ds, desc.Digest)
			if _, seen := sizes[desc.Digest]; !seen {
				sizes[desc.Digest] = desc.Size
			} else if sizes[desc.Digest] != desc.Size {
				sizes[desc.Digest] = 0 // the manifest disagrees with itself: no size
			}
		}
	}
	if err := s.markKnown(repo, ds, sizes); err != nil {
		return err
	}
	s.meta.marked.Add(whole, gen) // gen from before the marks: a removal meanwhile makes it stale
	return nil
}

// KnownSize is the size of d that the descriptor naming it in one of
// repo's manifests gave, when the pair was first recorded; 0 when none
// did. A fill for repo holds its source to it (FillMeta.Size). It reads
// memory, then the index, as Known does: a blob miss costs no bbolt
// transaction when its manifest was served.
func (s *Store) KnownSize(repo oci.Repo, d digest.Digest) int64 {
	n, _ := s.knownPair(knownKey(repo, d))
	return n
}

// knownSeeded marks a store whose known/ was seeded from its tags.
var knownSeeded = []byte("\x00seeded")

// seedKnown fills known/ once, in a store made before it existed, from
// what the index already says belongs where: each cached tag's manifest
// and what it names (an index's manifests and theirs). Content reached
// only by digest is known again the next time its repository's sources
// vouch for it.
func (s *Store) seedKnown() error {
	seeded := false
	tags := map[string]digest.Digest{}
	err := s.db.View(func(tx *bolt.Tx) error {
		seeded = tx.Bucket(bucketKnown).Get(knownSeeded) != nil
		if seeded {
			return nil
		}
		return tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
			var t Tag
			if json.Unmarshal(v, &t) == nil {
				tags[string(k)] = t.Digest
			}
			return nil
		})
	})
	if err != nil || seeded {
		return err
	}
	for key, d := range tags {
		repo, ok := repoOfKey(key)
		if !ok {
			continue
		}
		if err := s.seedManifest(repo, d, 2); err != nil {
			return err
		}
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKnown).Put(knownSeeded, []byte{1}) })
}

// repoOfKey is the repository of a tag key (TagKey): registry/name:tag.
func repoOfKey(key string) (oci.Repo, bool) {
	name, _, ok := splitTagKey(key)
	reg, repoName, ok2 := strings.Cut(name, "/")
	if !ok || !ok2 || reg == "" || repoName == "" {
		return oci.Repo{}, false
	}
	return oci.Repo{Registry: reg, Name: repoName}, true
}

func (s *Store) seedManifest(repo oci.Repo, d digest.Digest, depth int) error {
	info, err := s.Info(d)
	if err != nil {
		return nil // the tag's content is gone: nothing to know
	}
	refs, ok := s.readRefs(d, info)
	ds := []digest.Digest{d}
	if ok {
		ds = append(ds, leaves(&refs)...)
	}
	if err := s.MarkKnown(repo, ds...); err != nil {
		return err
	}
	if depth > 1 {
		for _, m := range refs.Manifests {
			if err := s.seedManifest(repo, m.Digest, depth-1); err != nil {
				return err
			}
		}
	}
	return nil
}
