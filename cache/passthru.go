package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
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

// passThru is the state of a fill passing through, made when the switch
// happens. Its fields are guarded by the fill's mu.
type passThru struct {
	fileEnd int64           // bytes readable from the file, fixed at the switch
	ring    []byte          // the last len(ring) bytes received after fileEnd
	pos     map[*Blob]int64 // readers' positions; -1 for one dropped as too slow
	moved   chan struct{}   // closed when a reader moves, while the writer waits for room
}

// passThrough switches f to memory: it removes the temp file's name (its
// descriptor stays readable), counts and logs the error, and asks for an
// eviction (unless the blob is larger than the quota: see checkRoom).
// Every open reader starts at the offset of its last Seek (a reader still
// in the file needs the ring from fileEnd on, whatever it read since). The
// fill's outcome is counted as reason "disk" (or "quota") when it ends.
func (s *Store) passThrough(f *fill, cause error) {
	if f.file != nil {
		os.Remove(f.file.Name())
	}
	ring := make([]byte, s.opts.PassThroughBuffer)
	f.update(func() {
		f.pt = &passThru{fileEnd: f.written, ring: ring, pos: make(map[*Blob]int64, len(f.readers))}
		for b, pos := range f.readers {
			f.pt.pos[b] = pos
		}
	})
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
	return f.pt == nil || f.pt.ringStart(f.written) <= f.pt.fileEnd
}

// ringStart is the first offset the ring holds, given written.
func (pt *passThru) ringStart(written int64) int64 {
	return max(pt.fileEnd, written-int64(len(pt.ring)))
}

// write appends p to the ring. Called by update, with f.mu held.
func (pt *passThru) write(f *fill, p []byte) {
	n := int64(len(pt.ring))
	for len(p) > 0 {
		i := f.written % n
		c := copy(pt.ring[i:], p)
		p = p[c:]
		f.written += int64(c)
	}
}

// readAt reads at b.pos, below limit: from the file up to fileEnd, then
// from the ring, and records the reader's new position for the writer.
func (pt *passThru) readAt(b *Blob, p []byte, limit int64) (int, error) {
	f := b.f
	f.mu.Lock()
	dropped := pt.pos[b] < 0
	f.mu.Unlock()
	if dropped {
		return 0, errFellBehind
	}
	var n int
	if b.pos < pt.fileEnd {
		var err error
		n, err = f.file.ReadAt(p[:min(int64(len(p)), min(limit, pt.fileEnd)-b.pos)], b.pos)
		if err != nil && !errors.Is(err, io.EOF) {
			return n, err
		}
	} else {
		var ok bool
		if n, ok = pt.ringRead(f, p, b.pos, limit); !ok {
			return 0, errFellBehind
		}
	}
	pt.setPos(f, b, b.pos+int64(n))
	return n, nil
}

// ringRead copies bytes at off from the ring into p, up to limit.
// ok is false when off is no longer in the ring.
func (pt *passThru) ringRead(f *fill, p []byte, off, limit int64) (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if off < pt.ringStart(f.written) {
		return 0, false
	}
	n := int64(len(pt.ring))
	p = p[:min(int64(len(p)), limit-off)]
	read := 0
	for read < len(p) {
		i := (off + int64(read)) % n
		read += copy(p[read:], pt.ring[i:min(n, i+int64(len(p)-read))])
	}
	return read, true
}

// setPos records where reader b is, waking a writer that waits for room.
func (pt *passThru) setPos(f *fill, b *Blob, pos int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := pt.pos[b]; !ok || p < 0 {
		return // closed, or dropped
	}
	pt.pos[b] = pos
	pt.wakeWriter()
}

// wakeWriter tells a writer waiting for room that a reader moved or left.
// Called with f.mu held.
func (pt *passThru) wakeWriter() {
	if pt.moved != nil {
		close(pt.moved)
		pt.moved = nil
	}
}

// waitRoom blocks until n more bytes fit in the ring without overwriting
// bytes a reader still needs, dropping readers that do not move for wait.
func (pt *passThru) waitRoom(ctx context.Context, f *fill, n int, wait time.Duration) error {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	last := int64(-1)
	for {
		f.mu.Lock()
		need := f.written + int64(n) - int64(len(pt.ring)) // bytes below this are overwritten
		low := pt.slowest()
		if low >= need {
			f.mu.Unlock()
			return nil
		}
		if low > last { // the slowest reader moved: it gets another wait
			last = low
			timer.Reset(wait)
		}
		moved := make(chan struct{})
		pt.moved = moved
		f.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			f.update(func() { pt.dropBelow(need) })
			return nil
		}
	}
}

// slowest is the lowest offset a reader still needs from the ring; a
// reader still in the file needs the ring from fileEnd. Called with f.mu held.
func (pt *passThru) slowest() int64 {
	low := int64(math.MaxInt64)
	for _, pos := range pt.pos {
		if pos >= 0 {
			low = min(low, max(pos, pt.fileEnd))
		}
	}
	return low
}

// dropBelow drops the readers that still need bytes below need. Called
// by update, with f.mu held.
func (pt *passThru) dropBelow(need int64) {
	for b, pos := range pt.pos {
		if pos >= 0 && max(pos, pt.fileEnd) < need {
			pt.pos[b] = -1
		}
	}
}
