package cache

import (
	"context"
	"fmt"
	"math"
	"os"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
)

// Pass-through: a fill whose temp file cannot be written (disk full, or
// no temp file at all) keeps streaming to its readers from memory.
//
//	[0, fileEnd)                  read from the (unlinked) temp file's descriptor
//	[ringStart, written)          read from the ring, ringStart >= fileEnd
//
// The ring holds the last len(ring) bytes received. Before it overwrites
// bytes, the writer waits until every reader is past them, so readers get
// every byte and the source is read no faster than the slowest reader.
// A reader that does not move for PassThroughWait is dropped (its Read
// fails with errFellBehind) rather than stall the rest. A caller arriving
// once the ring has moved past the file cannot start at 0 and is turned
// away with oci.ErrUnavailable; nothing is committed, so its retry after
// the fill ends starts a fresh one.

// errFellBehind fails a reader of a pass-through fill that fell behind
// its ring buffer.
var errFellBehind = fmt.Errorf("reader fell behind a fill passing through without disk space: %w", oci.ErrUnavailable)

// passThrough switches f to memory: it removes the temp file's name (its
// descriptor stays readable), counts and logs the error, and asks for an
// eviction (unless the blob is larger than the quota: see checkRoom). The
// fill's outcome is counted as reason "disk" (or "quota") when it ends.
func (s *Store) passThrough(f *fill, cause error) {
	if f.file != nil {
		os.Remove(f.file.Name())
	}
	ring := make([]byte, s.opts.PassThroughBuffer)
	f.update(func() { f.ring = ring })
	s.log.Warn("fill passes through without storing", "digest", f.d, "offset", f.state().written, "err", cause)
	if !f.overQuota.Load() { // eviction cannot make room for a blob larger than the quota
		s.kickEvict()
	}
}

// joinable reports whether a new reader starting at offset 0 can read f
// whole: always, unless the ring has moved past the bytes in the file.
func (f *fill) joinable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ring == nil || f.ringStart() <= f.fileEnd
}

// ringStart is the first offset the ring holds. Called with f.mu held.
func (f *fill) ringStart() int64 {
	return max(f.fileEnd, f.written-int64(len(f.ring)))
}

// ringWrite appends p to the ring. Called by update, with f.mu held.
func (f *fill) ringWrite(p []byte) {
	n := int64(len(f.ring))
	for len(p) > 0 {
		i := f.written % n
		c := copy(f.ring[i:], p)
		p = p[c:]
		f.written += int64(c)
	}
}

// ringRead copies bytes at off from the ring into p, up to limit.
// ok is false when off is no longer in the ring.
func (f *fill) ringRead(p []byte, off, limit int64) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < f.ringStart() {
		return 0, false
	}
	n := int64(len(f.ring))
	p = p[:min(int64(len(p)), limit-off)]
	read := 0
	for read < len(p) {
		i := (off + int64(read)) % n
		read += copy(p[read:], f.ring[i:min(n, i+int64(len(p)-read))])
	}
	return read, true
}

// setPos records where reader b is, waking a writer that waits for room.
func (f *fill) setPos(b *Blob, pos int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.readers[b]; !ok || p < 0 {
		return // closed, or dropped
	}
	f.readers[b] = pos
	if f.moved != nil {
		close(f.moved)
		f.moved = nil
	}
}

// dropped reports whether b was dropped as too slow.
func (f *fill) dropped(b *Blob) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readers[b] < 0
}

// waitRoom blocks until n more bytes fit in the ring without overwriting
// bytes a reader still needs, dropping readers that do not move for wait.
func (f *fill) waitRoom(ctx context.Context, n int, wait time.Duration) error {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	last := int64(-1)
	for {
		f.mu.Lock()
		need := f.written + int64(n) - int64(len(f.ring)) // bytes below this are overwritten
		low := f.slowest()
		if low >= need {
			f.mu.Unlock()
			return nil
		}
		if low > last { // the slowest reader moved: it gets another wait
			last = low
			timer.Reset(wait)
		}
		moved := make(chan struct{})
		f.moved = moved
		f.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			f.update(func() { f.dropBelow(need) })
			return nil
		}
	}
}

// slowest is the lowest offset a reader still needs from the ring; a
// reader still in the file needs the ring from fileEnd. Called with f.mu held.
func (f *fill) slowest() int64 {
	low := int64(math.MaxInt64)
	for _, pos := range f.readers {
		if pos >= 0 {
			low = min(low, max(pos, f.fileEnd))
		}
	}
	return low
}

// dropBelow drops the readers that still need bytes below need. Called
// by update, with f.mu held.
func (f *fill) dropBelow(need int64) {
	for b, pos := range f.readers {
		if pos >= 0 && max(pos, f.fileEnd) < need {
			f.readers[b] = -1
		}
	}
}
