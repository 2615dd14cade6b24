package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// GCOptions tunes one gc run. The zero value removes content unused for
// the store's GCMinAge.
type GCOptions struct {
	MinAge time.Duration // unreferenced content unused this long goes; 0 means Options.GCMinAge
	DryRun bool          // report only
}

// GCReport says what a gc run found.
type GCReport struct {
	Referenced int             `json:"referenced"` // content reachable from a cached tag or pinned
	Removed    []digest.Digest `json:"removed"`    // removed (or, with DryRun, to be removed)
	Bytes      int64           `json:"bytes"`      // their size
	DryRun     bool            `json:"dryRun"`
}

// GC removes content that no cached tag's manifest tree references (an
// index, its manifests, their configs and layers), that is not pinned or
// reachable from pinned manifests, and that nobody used for MinAge. Fills
// under way are left alone. GC may run while the store serves; it runs one
// at a time with eviction.
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	if o.MinAge <= 0 {
		o.MinAge = s.opts.GCMinAge
	}
	s.flushAccess()
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	roots, infos, err := s.gcRoots()
	if err != nil {
		return GCReport{}, fmt.Errorf("gc: %w", err)
	}
	ref := map[digest.Digest]bool{}
	for _, d := range roots {
		if err := ctx.Err(); err != nil {
			return GCReport{}, err
		}
		s.mark(d, ref, 0)
	}
	rep := GCReport{Referenced: len(ref), DryRun: o.DryRun}
	cutoff := time.Now().Add(-o.MinAge)
	for d, info := range infos {
		if ref[d] || info.Pinned || !s.lastAccess(d, info.Access).Before(cutoff) {
			continue
		}
		rep.Removed = append(rep.Removed, d)
		rep.Bytes += info.Size
	}
	if o.DryRun || len(rep.Removed) == 0 {
		return rep, nil
	}
	st, err := s.remove(rep.Removed, false)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	rep.Bytes = st.Bytes
	return rep, nil
}

// gcRoots returns the digests of cached tags and pinned content, and the
// index's entries.
func (s *Store) gcRoots() ([]digest.Digest, map[digest.Digest]Info, error) {
	var roots []digest.Digest
	infos := map[digest.Digest]Info{}
	err := s.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketTags).ForEach(func(_, v []byte) error {
			var t Tag
			if json.Unmarshal(v, &t) == nil {
				roots = append(roots, t.Digest)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			var info Info
			if json.Unmarshal(v, &info) != nil {
				return nil
			}
			d := digest.Digest(k)
			infos[d] = info
			if info.Pinned {
				roots = append(roots, d)
			}
			return nil
		})
	})
	return roots, infos, err
}

// manifestRefs is what gc reads of a manifest or an index.
type manifestRefs struct {
	Manifests []descRef `json:"manifests"`
	Config    *descRef  `json:"config"`
	Layers    []descRef `json:"layers"`
	Blobs     []descRef `json:"blobs"` // artifact manifests
}

type descRef struct {
	Digest digest.Digest `json:"digest"`
}

// mark marks d and, when it is a stored manifest, what it references.
func (s *Store) mark(d digest.Digest, ref map[digest.Digest]bool, depth int) {
	if ref[d] || d.Validate() != nil {
		return
	}
	ref[d] = true
	if depth > 8 {
		return // an index of indexes this deep is no image
	}
	if fi, err := os.Stat(s.BlobPath(d)); err != nil || fi.Size() > oci.MaxManifestSize {
		return // content not stored, or a layer
	}
	data, err := os.ReadFile(s.BlobPath(d))
	if err != nil {
		return
	}
	var m manifestRefs
	if json.Unmarshal(data, &m) != nil {
		return
	}
	for _, c := range m.Manifests {
		s.mark(c.Digest, ref, depth+1)
	}
	if m.Config != nil {
		ref[m.Config.Digest] = true
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		ref[l.Digest] = true
	}
}

// gcOnce is the periodic gc's run.
func (s *Store) gcOnce() {
	rep, err := s.GC(s.ctx, GCOptions{})
	if err != nil {
		s.log.Warn("gc", "err", err)
		return
	}
	if len(rep.Removed) > 0 {
		s.log.Info("gc", "removed", len(rep.Removed), "bytes", rep.Bytes, "referenced", rep.Referenced)
	}
}
