package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
)

// Range fill: one fill of a large blob fetching several byte ranges at
// once, each from its own source (a cluster's striped relay plan: every
// node downloads each stripe from a different parent and uploads its own
// stripe to its children).
//
//	[0, written)            the contiguous prefix: hashed behind the writers
//	[sp.start, sp.at)       the bytes of range sp received so far
//
// Each range has its own writer goroutine, which writes at its place in
// the (sparse) temp file and resumes at the byte it reached when a stream
// breaks; a hasher reads the contiguous prefix back as it grows, so the
// digest is checked over the whole blob, in order, before the commit.
// Readers read any byte that is present, out of order (a peer asking for
// another range is served as soon as that range's bytes land); the blob's
// last byte is held back until the commit, as in a one-stream fill, so no
// reader sees a clean end of the whole blob before it is verified.
//
// A range fill first reads the blob's first bytes in one stream
// (RangeSource.First: at most a smallest stripe's worth), which tells the
// size; a small blob ends there. When the blob splits into two ranges or
// more and the temp file takes the bytes, the ranges are fetched at once,
// the first from where that stream ended. When a range cannot be fetched
// (its sources fail MaxAttempts times in a row without a byte) or the disk
// fails, the other ranges stop and the fill goes on as a one-stream fill
// from the end of the contiguous prefix, through the Opener.

// Range is the bytes [Start, End) of a blob.
type Range struct{ Start, End int64 }

// RangeSource fetches a blob as several ranges at once (FillMeta.Ranges).
type RangeSource interface {
	// First returns the blob's first bytes (unverified) and its size, as
	// an Opener at offset 0 does, except that the stream may end before
	// the blob does: after at most a smallest stripe's worth of bytes.
	// An error leaves the fill to the Opener alone.
	First(ctx context.Context) (rc io.ReadCloser, size int64, source string, err error)
	// Split cuts a blob of size bytes into the ranges to fetch at once:
	// in order, adjacent, covering [0, size). Fewer than two means one
	// stream.
	Split(size int64) []Range
	// OpenRange returns the blob's bytes [offset, end) (unverified), from
	// wherever the range is to come from now; size is the blob's size.
	// source names it for logs and metrics. Called again with the byte
	// reached when a stream breaks.
	OpenRange(ctx context.Context, size, offset, end int64) (rc io.ReadCloser, source string, err error)
}

// span is one range of a range fill and the bytes received in it; its
// fields other than start and end are guarded by the fill's mu.
type span struct {
	start, end int64
	at         int64 // bytes [start, at) are in the file
}

// present returns the end of the bytes present from pos on (pos itself
// when none is). Called with f.mu held.
func (f *fill) present(pos int64) int64 {
	if pos < f.written {
		return f.written
	}
	for _, sp := range f.spans {
		if sp.start <= pos && pos < sp.at {
			return sp.at
		}
	}
	return pos
}

// readable returns the end of the bytes a reader at pos may read now:
// those present, less (hold) the blob's last byte until the digest checks.
func (f *fill) readable(pos int64, hold bool) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	end := f.present(pos)
	if hold && !f.verified && f.size >= 0 && end >= f.size {
		end = f.size - 1
	}
	return end
}

// prefix recomputes written, the contiguous prefix. Called with f.mu held.
func (f *fill) prefix() {
	for _, sp := range f.spans {
		if sp.start > f.written {
			return
		}
		f.written = max(f.written, sp.at)
		if sp.at < sp.end {
			return
		}
	}
}

// fetch downloads f: as a range fill when meta.Ranges allows one, else (or
// after a range fill gives up) in one stream from open.
func (s *Store) fetch(ctx context.Context, f *fill, meta FillMeta, h io.Writer, open Opener) error {
	rs := meta.Ranges
	if rs == nil || f.file == nil {
		return s.download(ctx, f, h, open)
	}
	first := func(ctx context.Context, offset int64) (io.ReadCloser, int64, string, error) {
		if offset != 0 {
			return nil, 0, "", fmt.Errorf("first bytes from %d: %w", offset, oci.ErrUnavailable)
		}
		return rs.First(ctx)
	}
	ph := newPipeHash(h)
	_, done, err := s.attempt(ctx, f, ph, first)
	ph.wait() // every byte so far is hashed before the ranges' hasher goes on
	switch {
	case done && (err == nil || ctx.Err() != nil || !retryable(err)):
		return err // whole (a small blob), or failed for good
	case done:
		return s.download(ctx, f, h, open)
	}
	if st := f.state(); st.size > 0 && st.pt == nil {
		striped, rerr := s.fetchRanges(ctx, f, rs, h, st.size)
		if striped {
			return rerr
		}
		if rerr != nil {
			s.log.Warn("range fill gives up, one stream goes on", "digest", f.d, "offset", f.state().written, "err", rerr)
		}
	} else if err != nil {
		s.log.Debug("range fill: first bytes failed, one stream", "digest", f.d, "err", err)
	}
	return s.download(ctx, f, h, open)
}

// fetchRanges runs a range fill of a blob of size bytes whose first
// written bytes are in the file and the hash. done reports that the fill
// is over (err says how); otherwise the caller goes on in one stream from
// written.
func (s *Store) fetchRanges(ctx context.Context, f *fill, rs RangeSource, h io.Writer, size int64) (done bool, err error) {
	ranges := rs.Split(size)
	if len(ranges) < 2 || !validRanges(ranges, size) {
		return false, nil
	}
	if s.checkRoom(f, size) {
		return false, nil // passing through: one stream, through memory
	}
	written := f.state().written
	spans := make([]*span, len(ranges))
	for i, r := range ranges {
		spans[i] = &span{start: r.Start, end: r.End, at: min(max(written, r.Start), r.End)}
	}
	from := make([]int64, len(spans)) // where each span began: bytes past it are new
	for i, sp := range spans {
		from[i] = sp.at
	}
	f.update(func() { f.spans = spans })
	s.m.RangeFill(len(spans))
	s.log.Info("range fill", "digest", f.d, "size", size, "ranges", len(spans), "offset", written)

	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for _, sp := range spans {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.fetchSpan(rctx, f, sp, size, rs); err != nil {
				cancel(err)
			}
		}()
	}
	herr := s.hashPrefix(rctx, f, h, written, size)
	cancel(herr)
	wg.Wait()
	if herr == nil {
		return true, nil
	}
	cause := context.Cause(rctx)
	if ctx.Err() != nil || errors.Is(cause, oci.ErrTooLarge) {
		return true, cause
	}
	// Go on in one stream from the contiguous prefix: the bytes past it
	// will be written (and counted) again.
	var got int64
	f.update(func() {
		for i, sp := range f.spans {
			got += sp.at - from[i]
		}
		f.spans = nil
	})
	s.pending.Add(f.state().written - written - got)
	return false, cause
}

// validRanges reports whether rs are in order, adjacent and cover [0, size).
func validRanges(rs []Range, size int64) bool {
	at := int64(0)
	for _, r := range rs {
		if r.Start != at || r.End <= r.Start {
			return false
		}
		at = r.End
	}
	return at == size
}

// fetchSpan fills sp from rs, resuming at the byte reached when a stream
// breaks; MaxAttempts opens in a row that bring no byte end it.
func (s *Store) fetchSpan(ctx context.Context, f *fill, sp *span, size int64, rs RangeSource) error {
	buf := make([]byte, 256<<10)
	for failures := 0; ; {
		f.mu.Lock()
		at := sp.at
		f.mu.Unlock()
		if at == sp.end {
			return nil
		}
		n, err := s.spanAttempt(ctx, f, sp, size, rs, buf)
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if err == nil {
			continue
		}
		if n > 0 {
			failures = 0
		}
		if failures++; failures >= s.opts.MaxAttempts || errors.Is(err, errWrite) {
			return fmt.Errorf("range %d-%d: %w", sp.start, sp.end, err)
		}
		s.log.Debug("range resumes", "digest", f.d, "range", fmt.Sprintf("%d-%d", sp.start, sp.end), "offset", at+n, "err", err)
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(time.Duration(failures) * 100 * time.Millisecond):
		}
	}
}

// errWrite marks a range fill's failure to write its temp file.
var errWrite = errors.New("temp file write")

// spanAttempt reads one stream of sp's bytes from where it is.
func (s *Store) spanAttempt(ctx context.Context, f *fill, sp *span, size int64, rs RangeSource, buf []byte) (n int64, err error) {
	f.mu.Lock()
	at := sp.at
	f.mu.Unlock()
	rc, source, err := rs.OpenRange(ctx, size, at, sp.end)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	if b, ok := rc.(Blamer); ok {
		f.mu.Lock()
		f.rangeBlamers = append(f.rangeBlamers, b)
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.source = source
	f.mu.Unlock()
	for at < sp.end {
		m, rerr := rc.Read(buf[:min(int64(len(buf)), sp.end-at)])
		if m > 0 {
			if _, werr := s.writeAt(f.file, buf[:m], at); werr != nil {
				return n, fmt.Errorf("%w %s: %w", errWrite, f.d, werr)
			}
			at += int64(m)
			n += int64(m)
			s.pending.Add(int64(m))
			s.m.Fetched(source, int64(m))
			f.update(func() { sp.at = at; f.prefix() })
		}
		switch {
		case rerr == io.EOF && at < sp.end:
			return n, fmt.Errorf("%s: range ended at %d of %d-%d: %w", source, at, sp.start, sp.end, io.ErrUnexpectedEOF)
		case rerr != nil && rerr != io.EOF:
			return n, fmt.Errorf("%s: %w", source, rerr)
		}
	}
	return n, nil
}

// hashPrefix hashes the contiguous prefix from hashed on as it grows,
// reading it back from the temp file, until all size bytes are hashed. It
// fails when a range fails (ctx's cause).
func (s *Store) hashPrefix(ctx context.Context, f *fill, h io.Writer, hashed, size int64) error {
	buf := make([]byte, 1<<20)
	for hashed < size {
		st := f.state()
		if hashed == st.written {
			select {
			case <-st.wake:
				continue
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		m, err := f.file.ReadAt(buf[:min(int64(len(buf)), st.written-hashed)], hashed)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("hash %s: %w", f.d, err)
		}
		h.Write(buf[:m])
		hashed += int64(m)
	}
	return nil
}
