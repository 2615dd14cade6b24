package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/berth-registry/berth/pkg/oci"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The quota. The store keeps its committed bytes and blob count in atomic
// counters (set by reconcile at start, moved by every commit and removal),
// so checking the quota costs no I/O. Bytes written to temp files of fills
// under way take disk space too, and Usage counts them, but eviction works
// on committed content only: a download in progress is no reason to remove
// what the store holds (its size may be unknown, or larger than the
// quota). Eviction starts when committed bytes pass the high watermark and
// removes least recently used content until they are at the low one, and
// it stops short of that, saying why, when what is left is pinned or is the
// most recently used blob alone: a blob larger than the low watermark
// would otherwise evict itself right after its commit.
//
// Eviction takes s.commitMu exclusively while it removes files, so no
// commit runs in between: a digest cannot be re-committed half way through
// its own removal. Readers are never in the way: a file opened before its
// unlink stays whole for its reader (the inode lives while a descriptor
// does), and one opened after it is a miss.

// Why an eviction stopped: the values of EvictStats.Stopped and of the
// stopped label of berth_eviction_runs_total.
const (
	StopLowWatermark = "low_watermark" // committed bytes are at or below the low watermark
	StopInProgress   = "in_progress"   // only bytes of fills under way are above it
	StopPinned       = "pinned"        // the rest is pinned
	StopNewest       = "newest"        // the rest is the most recently used blob (and pinned content)
)

// EvictStats says what one eviction removed and why it stopped.
type EvictStats struct {
	Blobs   int    `json:"blobs"`
	Bytes   int64  `json:"bytes"`
	Tags    int    `json:"tags"` // tag mappings dropped with their manifests
	Stopped string `json:"stopped,omitempty"`
}

// Usage returns the bytes the store holds (committed, plus temp files of
// fills under way) and the number of committed blobs. It takes no lock.
func (s *Store) Usage() (bytes, blobs int64) {
	return s.bytes.Load() + s.pending.Load(), s.blobs.Load()
}

// Quota returns the store's quota in bytes; 0 means none.
func (s *Store) Quota() int64 { return s.opts.MaxBytes }

// overHigh reports whether committed content is above the high watermark.
func (s *Store) overHigh() bool {
	q := s.opts.MaxBytes
	return q > 0 && float64(s.bytes.Load()) > float64(q)*s.opts.HighWatermark
}

// fillRoom is the most a single fill may hold on disk: the quota less the
// pinned content eviction cannot remove. 0 means no bound.
func (s *Store) fillRoom() int64 {
	q := s.opts.MaxBytes
	if q <= 0 {
		return 0
	}
	return max(0, q-s.pinnedBytes.Load())
}

// checkRoom switches fill f to pass-through when it needs more than
// fillRoom (n is its size, or the bytes it has reached): it then streams to
// its readers and stores nothing, and evicts nothing for a blob the store
// cannot hold. It reports whether f passes through.
func (s *Store) checkRoom(f *fill, n int64) bool {
	room := s.fillRoom()
	if s.opts.MaxBytes <= 0 || n <= room {
		return false
	}
	if f.state().pt != nil {
		return true
	}
	f.overQuota.Store(true)
	s.passThrough(f, fmt.Errorf("blob %s: %d bytes, more than the %d the quota can hold: %w", f.d, n, room, oci.ErrTooLarge))
	return true
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
			if _, err := s.Evict(); err != nil {
				s.log.Warn("evict", "err", err)
			}
		}
	}
}

// logEviction logs a run that removed something, and a stop above the low
// watermark once per change of reason. Called with evictMu held.
func (s *Store) logEviction(st EvictStats) {
	used, _ := s.Usage()
	attrs := []any{"blobs", st.Blobs, "bytes", st.Bytes, "tags", st.Tags, "stopped", st.Stopped, "committed", s.bytes.Load(), "usage", used, "quota", s.opts.MaxBytes}
	switch {
	case st.Stopped != StopLowWatermark && st.Stopped != s.lastStop:
		s.log.Warn("eviction stopped above the low watermark", attrs...)
	case st.Blobs > 0:
		s.log.Info("evicted", attrs...)
	}
	s.lastStop = st.Stopped
}

// Evict removes the least recently used committed content until committed
// bytes are at or below the low watermark. Pinned content (see pin.go)
// and fills under way are never evicted, nor is the most recently used
// blob; when only those are left above the watermark, Evict stops and
// says so in Stopped. A manifest goes together with the tag mappings that
// point at it, tags first. Evict does nothing without a quota. It may run
// concurrently with reads and fills; evictions, gc and pinning run one at
// a time.
func (s *Store) Evict() (EvictStats, error) {
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	q := s.opts.MaxBytes
	if q <= 0 {
		return EvictStats{}, nil
	}
	target := int64(float64(q) * s.opts.LowWatermark)
	used := s.bytes.Load()
	if used <= target {
		st := EvictStats{Stopped: StopLowWatermark}
		if used+s.pending.Load() > target {
			st.Stopped = StopInProgress
		}
		s.m.EvictionRun(st.Stopped)
		s.logEviction(st)
		return st, nil
	}
	sc, err := s.scan()
	if err != nil {
		return EvictStats{}, fmt.Errorf("evict: %w", err)
	}
	pinned := sc.pinned(s)
	s.notePinned(sc, pinned)
	cands := s.candidates(sc, pinned)
	slices.SortFunc(cands, func(a, b candidate) int { return a.access.Compare(b.access) })
	var victims []digest.Digest
	pinnedBytes := s.pinnedBytes.Load()
	stopped := StopLowWatermark
	for i, c := range cands {
		if used <= target {
			break
		}
		if i == len(cands)-1 { // the newest stays: it is what a client just pulled
			stopped = StopNewest
			break
		}
		victims = append(victims, c.d)
		used -= c.size
	}
	if used > target && (len(cands) == 0 || pinnedBytes > target) {
		stopped = StopPinned
	}
	st, err := s.remove(victims, true, pinned)
	st.Stopped = stopped
	if err != nil {
		return st, fmt.Errorf("evict: %w", err)
	}
	if s.m != nil {
		s.m.Evictions.Add(float64(st.Blobs))
		s.m.EvictedBytes.Add(float64(st.Bytes))
	}
	s.m.EvictionRun(stopped)
	s.logEviction(st)
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
func (s *Store) candidates(sc *indexScan, pinned map[digest.Digest]bool) []candidate {
	var out []candidate
	for d, info := range sc.infos {
		if !pinned[d] {
			out = append(out, candidate{d: d, size: info.Size, access: s.lastAccess(d, info.Access)})
		}
	}
	return out
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

// remove deletes committed content: index entries first, in one
// transaction, then the files, so the index never names a file that is
// gone, not even for a moment (a reader of the index, or a copy of it,
// sees each entry's file). A crash between leaves files without entries,
// which the next start re-hashes and indexes or removes. With dropTags, tag mappings pointing at a
// removed digest go in the same transaction. Pinned content and digests
// with a fill under way are skipped, unless force (bad files); pinned is
// the set pin.go works out, taken under evictMu by the caller.
func (s *Store) remove(victims []digest.Digest, dropTags bool, pinned map[digest.Digest]bool) (EvictStats, error) {
	return s.removeMode(victims, dropTags, false, pinned)
}

// removeBad removes files that failed verification, pinned or not.
func (s *Store) removeBad(bad []digest.Digest) (EvictStats, error) {
	return s.removeMode(bad, true, true, nil)
}

func (s *Store) removeMode(victims []digest.Digest, dropTags, force bool, pinned map[digest.Digest]bool) (EvictStats, error) {
	var st EvictStats
	if len(victims) == 0 {
		return st, nil
	}
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	var forgotTags, forgotKnown []string
	var unlink []digest.Digest
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
		st, forgotTags, forgotKnown, unlink = EvictStats{}, nil, nil, nil // a retried transaction starts over
		for _, d := range victims {
			v := b.Get([]byte(d))
			var info Info
			indexed := v != nil && json.Unmarshal(v, &info) == nil
			if !force && (!indexed || info.Pinned || pinned[d] || s.filling(d)) {
				continue
			}
			for _, k := range tagsOf[d] { // the tag goes before its manifest
				if err := tx.Bucket(bucketTags).Delete(k); err != nil {
					return err
				}
				forgotTags = append(forgotTags, string(k))
			}
			unlink = append(unlink, d)
			if !indexed {
				continue
			}
			if err := b.Delete([]byte(d)); err != nil {
				return err
			}
			st.Blobs++
			st.Bytes += info.Size
		}
		var err error
		forgotKnown, err = forgetKnown(tx, unlink)
		return err
	})
	if err != nil {
		return EvictStats{}, err
	}
	for _, d := range unlink { // still under commitMu: no commit of d meanwhile
		if err := os.Remove(s.BlobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("remove blob: left without its index entry until the next start", "digest", d, "err", err)
		}
	}
	for _, d := range victims {
		s.meta.forget(d)
	}
	for _, k := range forgotTags {
		s.meta.forgetTag(k)
	}
	for _, k := range forgotKnown {
		s.meta.known.Remove(k)
	}
	if len(forgotKnown) > 0 {
		s.meta.knownGen.Add(1) // manifests naming them mark them again when served
	}
	st.Tags = len(forgotTags)
	s.added(-st.Bytes, -int64(st.Blobs))
	return st, nil
}

// refreshPinned works out the size of pinned content again.
func (s *Store) refreshPinned() {
	if s.opts.MaxBytes <= 0 {
		return // only fillRoom needs it
	}
	sc, err := s.scan()
	if err != nil {
		s.log.Warn("pinned content", "err", err)
		return
	}
	s.notePinned(sc, sc.pinned(s))
}

// notePinned keeps the size of pinned content for fillRoom.
func (s *Store) notePinned(sc *indexScan, pinned map[digest.Digest]bool) {
	var n int64
	for d := range pinned {
		n += sc.infos[d].Size
	}
	s.pinnedBytes.Store(n)
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
