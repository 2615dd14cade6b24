package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The quota. The store keeps its committed bytes and blob count in atomic
// counters (set by reconcile at start, moved by every commit and removal),
// so checking the quota costs no I/O. Bytes written to temp files of fills
// under way count too: they take disk space like committed ones.
//
// Eviction takes s.commitMu exclusively while it removes files, so no
// commit runs in between: a digest cannot be re-committed half way through
// its own removal. Readers are never in the way: a file opened before its
// unlink stays whole for its reader (the inode lives while a descriptor
// does), and one opened after it is a miss.

// EvictStats says what one eviction removed.
type EvictStats struct {
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	Tags  int   `json:"tags"` // tag mappings dropped with their manifests
}

// Usage returns the bytes the store holds (committed, plus temp files of
// fills under way) and the number of committed blobs. It takes no lock.
func (s *Store) Usage() (bytes, blobs int64) {
	return s.bytes.Load() + s.pending.Load(), s.blobs.Load()
}

// Quota returns the store's quota in bytes; 0 means none.
func (s *Store) Quota() int64 { return s.opts.MaxBytes }

func (s *Store) overHigh() bool {
	q := s.opts.MaxBytes
	used, _ := s.Usage()
	return q > 0 && float64(used) > float64(q)*s.opts.HighWatermark
}

// kickEvict asks the eviction goroutine to run; it never blocks.
func (s *Store) kickEvict() {
	select {
	case s.evictCh <- struct{}{}:
	default:
	}
}

func (s *Store) evictLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.evictCh:
			if !s.overHigh() {
				continue
			}
			st, err := s.Evict()
			if err != nil {
				s.log.Warn("evict", "err", err)
				continue
			}
			used, _ := s.Usage()
			s.log.Info("evicted", "blobs", st.Blobs, "bytes", st.Bytes, "tags", st.Tags, "usage", used, "quota", s.opts.MaxBytes)
		}
	}
}

// Evict removes the least recently used content until the store is at or
// below its low watermark. Pinned content and fills under way are never
// evicted; a manifest goes together with the tag mappings that point at
// it, tags first. Evict does nothing without a quota. It may run
// concurrently with reads and fills; evictions run one at a time.
func (s *Store) Evict() (EvictStats, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	q := s.opts.MaxBytes
	if q <= 0 {
		return EvictStats{}, nil
	}
	target := int64(float64(q) * s.opts.LowWatermark)
	used, _ := s.Usage()
	if used <= target {
		return EvictStats{}, nil
	}
	cands, err := s.candidates()
	if err != nil {
		return EvictStats{}, fmt.Errorf("evict: %w", err)
	}
	slices.SortFunc(cands, func(a, b candidate) int { return a.access.Compare(b.access) })
	var victims []digest.Digest
	for _, c := range cands {
		if used <= target {
			break
		}
		victims = append(victims, c.d)
		used -= c.size
	}
	st, err := s.remove(victims, true)
	if err != nil {
		return st, fmt.Errorf("evict: %w", err)
	}
	if s.m != nil {
		s.m.Evictions.Add(float64(st.Blobs))
		s.m.EvictedBytes.Add(float64(st.Bytes))
	}
	return st, nil
}

type candidate struct {
	d      digest.Digest
	size   int64
	access time.Time
}

// candidates lists the unpinned content of the index with its last access:
// the later of the index's time and the one gathered in memory since the
// last flush.
func (s *Store) candidates() ([]candidate, error) {
	var out []candidate
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			var info Info
			if err := json.Unmarshal(v, &info); err != nil || info.Pinned {
				return nil // an unreadable entry is left to verify
			}
			d := digest.Digest(k)
			out = append(out, candidate{d: d, size: info.Size, access: s.lastAccess(d, info.Access)})
			return nil
		})
	})
	return out, err
}

// lastAccess merges the index's access time with the unflushed one.
func (s *Store) lastAccess(d digest.Digest, indexed time.Time) time.Time {
	if v, ok := s.acc.m.Load(d); ok {
		if t := time.Unix(0, v.(int64)); t.After(indexed) {
			return t
		}
	}
	return indexed
}

// remove deletes committed content: files first, then index entries, in
// one transaction, so a crash leaves entries without files (dropped at the
// next start), never the reverse. With dropTags, tag mappings pointing at a
// removed digest go in the same transaction. Pinned content and digests
// with a fill under way are skipped, unless force (bad files).
func (s *Store) remove(victims []digest.Digest, dropTags bool) (EvictStats, error) {
	return s.removeMode(victims, dropTags, false)
}

// removeBad removes files that failed verification, pinned or not.
func (s *Store) removeBad(bad []digest.Digest) (EvictStats, error) {
	return s.removeMode(bad, true, true)
}

func (s *Store) removeMode(victims []digest.Digest, dropTags, force bool) (EvictStats, error) {
	var st EvictStats
	if len(victims) == 0 {
		return st, nil
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var forgotTags []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		tagsOf := map[digest.Digest][][]byte{}
		if dropTags {
			err := tx.Bucket(bucketTags).ForEach(func(k, v []byte) error {
				var t Tag
				if json.Unmarshal(v, &t) == nil {
					tagsOf[t.Digest] = append(tagsOf[t.Digest], slices.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		st, forgotTags = EvictStats{}, nil // a retried transaction starts over
		for _, d := range victims {
			v := b.Get([]byte(d))
			var info Info
			indexed := v != nil && json.Unmarshal(v, &info) == nil
			if !force && (!indexed || info.Pinned || s.filling(d)) {
				continue
			}
			for _, k := range tagsOf[d] { // the tag goes before its manifest
				if err := tx.Bucket(bucketTags).Delete(k); err != nil {
					return err
				}
				forgotTags = append(forgotTags, string(k))
			}
			if err := os.Remove(s.BlobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.log.Warn("remove blob", "digest", d, "err", err)
				continue
			}
			if !indexed {
				continue
			}
			if err := b.Delete([]byte(d)); err != nil {
				return err
			}
			st.Blobs++
			st.Bytes += info.Size
		}
		return nil
	})
	if err != nil {
		return EvictStats{}, err
	}
	for _, d := range victims {
		s.meta.forget(d)
	}
	for _, k := range forgotTags {
		s.meta.forgetTag(k)
	}
	st.Tags = len(forgotTags)
	s.added(-st.Bytes, -int64(st.Blobs))
	return st, nil
}

func (s *Store) filling(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.fills[d]
	return ok
}

// added moves the committed counters and the gauges.
func (s *Store) added(bytes, blobs int64) {
	b, n := s.bytes.Add(bytes), s.blobs.Add(blobs)
	if s.m != nil {
		s.m.StoreBytes.Set(float64(b))
		s.m.StoreBlobs.Set(float64(n))
		s.m.StoreQuota.Set(float64(s.opts.MaxBytes))
	}
	if bytes > 0 && s.overHigh() {
		s.kickEvict()
	}
}

// Pin keeps committed content d from eviction and gc until Unpin. The
// error wraps ErrNotFound when d is not in the store.
func (s *Store) Pin(d digest.Digest) error { return s.setPinned(d, true) }

// Unpin makes pinned content d evictable again.
func (s *Store) Unpin(d digest.Digest) error { return s.setPinned(d, false) }

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
