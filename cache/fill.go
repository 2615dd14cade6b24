package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// FillMeta describes a blob being filled.
type FillMeta struct {
	MediaType string // recorded in the index on commit; "" for layers
	Repo      string // the repository asked for: registry/name (oci.Repo.String)
	// Vouched says the caller knows the blob belongs to Repo (Known, or a
	// source of Repo's just said so). Without it, Fill neither joins a
	// fill made for another repository nor serves a blob committed
	// meanwhile that is not known for Repo: it answers ErrNotVouched.
	Vouched bool
	// Size is the blob's size from a descriptor that names it (a manifest's
	// layer); 0 when unknown. A source that says otherwise or sends more
	// fails the fill.
	Size int64
	// Origin names where the caller's Opener gets its bytes (the
	// registry). A caller joining a fill of another Origin lends its
	// Opener as a fallback: when the fill's source fails, or sends nothing
	// for StallAfter, the fill goes on from the fallback at the byte
	// reached, so one slow or hostile registry cannot hold another's
	// clients. "" lends nothing.
	Origin string
	// Ranges, when set, lets a large blob be fetched as several byte
	// ranges at once (ranges.go); nil fetches it in one stream from the
	// Opener.
	Ranges RangeSource
}

// Blamer is a source stream that can be told, after the fact, that the
// blob it helped fill failed its digest (a peer, which is then not asked
// for a while). The store hashes every byte once; sources need not.
type Blamer interface {
	Blame(err error)
}

// Opener fetches a blob from offset on. It returns the bytes (unverified),
// the blob's total size (-1 when unknown) and the name of the source for
// logs and metrics. A fill calls it again with the offset it reached when a
// stream breaks, so an Opener may move to another source between calls.
type Opener func(ctx context.Context, offset int64) (rc io.ReadCloser, size int64, source string, err error)

// fill is one blob download under way. The writer goroutine appends to a
// temp file; readers read the same file with ReadAt as it grows. Every
// change of state closes wake and makes a new one, so waiting readers can
// select on it together with their request's context.
//
// When the temp file cannot be written (disk full), the fill passes
// through (passthru.go): the bytes already in the file stay readable from
// it, and later bytes go to a ring buffer in memory that readers copy
// from. Nothing is committed then; readers still get every byte, and a
// clean end only once the digest checks. That case lives in a passThru
// made at the switch; until then a reader's Read takes one lock (state)
// and reads the file.
type fill struct {
	d       digest.Digest
	repo    string // the repository first asked for (FillMeta.Repo): logs, the status page, joining
	started time.Time
	file    *os.File // O_RDWR temp file; linked into place on commit; nil if none could be made
	// limit caps the bytes a fill takes (see fillLimit); 0 means none.
	// limitWhy names it; sized reports that it is the blob's own size
	// (from a descriptor), which a source may not contradict either.
	limit    int64
	limitWhy string
	sized    bool

	blamers []Blamer // source streams to tell of a digest mismatch; the fill goroutine's own
	// reserved is where the temp file's preallocated blocks end;
	// noPrealloc stops preallocating once it failed. The fill
	// goroutine's own.
	reserved   int64
	noPrealloc bool
	overQuota  atomic.Bool // passing through because the blob is larger than the quota can hold

	mu       sync.Mutex // guards the fields below
	size     int64      // total size, -1 until a source tells it
	written  int64      // bytes received: in the file, then the ring
	verified bool       // every byte is in and matches the digest: readers may take the last one
	done     bool       // committed (or failed to be), or failed before verification
	err      error      // why the fill failed before verification; readers see it
	// commitErr says why verified bytes were not stored (fsync, link):
	// readers have their bytes; Blob.Done reports it.
	commitErr error
	wake      chan struct{}   // closed on each change of state
	source    string          // the source of the latest bytes
	origin    string          // FillMeta.Origin of the caller that started it
	fallbacks []Opener        // joiners' Openers of other origins, not yet tried
	lent      map[string]bool // origins that lent a fallback
	readers   map[*Blob]int64 // open readers, at the offset of their last Seek; the file closes when none is left and the writer is done
	writing   bool            // the fill goroutine still holds the file
	pt        *passThru       // nil while the file takes the bytes
	spans     []*span         // a range fill's ranges (ranges.go); nil for one stream
	// rangeBlamers are a range fill's source streams, told of a digest
	// mismatch like blamers.
	rangeBlamers []Blamer
}

type fillState struct {
	size, written  int64
	verified, done bool
	err            error
	wake           <-chan struct{}
	fileEnd        int64     // bytes readable from the file: written, until a pass-through
	pt             *passThru // nil unless passing through
	ranges         bool      // a range fill: bytes may be present past written
}

func (f *fill) state() fillState {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := fillState{f.size, f.written, f.verified, f.done, f.err, f.wake, f.written, f.pt, f.spans != nil}
	if f.pt != nil {
		st.fileEnd = f.pt.fileEnd
	}
	return st
}

// update changes the state under the lock and wakes every waiting reader.
func (f *fill) update(change func()) {
	f.mu.Lock()
	change()
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

// release closes the file once neither the writer nor any reader holds
// it. Called with f.mu held; the caller has just let go.
func (f *fill) release() {
	if !f.writing && len(f.readers) == 0 && f.file != nil {
		f.file.Close()
	}
}

// seeked records where reader b will read next.
func (f *fill) seeked(b *Blob, pos int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.readers[b]; ok {
		f.readers[b] = pos
	}
	if f.pt != nil {
		if p, ok := f.pt.pos[b]; ok && p >= 0 {
			f.pt.pos[b] = pos
			f.pt.wakeWriter()
		}
	}
}

// leave forgets reader b, waking a writer that may have waited for it.
func (f *fill) leave(b *Blob) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.readers, b)
	if f.pt != nil {
		delete(f.pt.pos, b)
		f.pt.wakeWriter()
	}
	f.release()
}

// writerDone lets go of the file on the fill goroutine's side.
func (f *fill) writerDone() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writing = false
	f.release()
}

// Fill returns blob d for reading: the committed file when the store has
// it, else a reader of the fill under way, starting one with open if none
// is. Fill does not wait for the source; Blob.Wait does. The fill outlives
// ctx: a download goes on (and is kept) when its first client leaves.
// meta describes the blob for the index and the log.
func (s *Store) Fill(ctx context.Context, d digest.Digest, meta FillMeta, open Opener) (*Blob, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("fill %q: %w", d, oci.ErrDigestInvalid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.fills[d]; ok {
		if !meta.Vouched && f.repo != meta.Repo {
			return nil, fmt.Errorf("fill %s for %s: %w", d, meta.Repo, ErrNotVouched)
		}
		if !f.joinable() {
			return nil, fmt.Errorf("fill %s: passing through without disk space, too far along to join: %w", d, oci.ErrUnavailable)
		}
		s.m.Deduped()
		f.lend(meta.Origin, open)
		return newFillBlob(ctx, f), nil
	}
	// Committed between the caller's miss and this lock? Then serve that,
	// if it is known to be Repo's.
	if file, size, err := s.openCommitted(d); err == nil {
		if !meta.Vouched && !s.knownKey(meta.Repo, d) {
			file.Close()
			return nil, fmt.Errorf("blob %s for %s: %w", d, meta.Repo, ErrNotVouched)
		}
		return &Blob{file: file, size: size}, nil
	}
	if s.ctx.Err() != nil {
		return nil, fmt.Errorf("fill %s: store closed", d)
	}
	f := &fill{d: d, size: -1, wake: make(chan struct{}), writing: true, readers: map[*Blob]int64{}, repo: meta.Repo, started: time.Now(),
		origin: meta.Origin, lent: map[string]bool{}}
	f.limit, f.limitWhy, f.sized = s.fillLimit(meta)
	tmp, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "fill-")
	if err != nil {
		s.passThrough(f, fmt.Errorf("create temp file: %w", err))
	}
	f.file = tmp
	s.fills[d] = f
	s.m.FillStarted()
	s.log.Info("fill started", "digest", d, "repo", meta.Repo)
	s.wg.Add(1)
	go s.run(f, meta, open)
	return newFillBlob(ctx, f), nil
}

// run downloads f, commits it, and removes it from the fills map.
func (s *Store) run(f *fill, meta FillMeta, open Opener) {
	defer s.wg.Done()
	defer f.writerDone()
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.FillTimeout)
	defer cancel()
	start := time.Now()
	dg := f.d.Algorithm().Digester()
	stop := make(chan struct{})
	go s.logProgress(f, meta, start, stop)
	err := s.fetch(ctx, f, meta, dg.Hash(), open)
	close(stop)
	st := f.state()
	s.pending.Add(-st.fileEnd) // the commit counts the bytes again, as committed
	if err == nil {
		if got := dg.Digest(); got != f.d {
			err = fmt.Errorf("blob %s: got %s: %w", f.d, got, oci.ErrDigestMismatch)
		}
	}
	// Verified: readers may take the last byte now. Making the copy
	// durable (fsync, link, index) follows; a crash or a failure there
	// loses only the cached copy, never a reader's bytes.
	var commitErr error
	if err == nil {
		f.update(func() { f.verified = true })
		if st.pt == nil {
			commitErr = s.commit(f.file, dg, f.d, Info{Size: f.written, MediaType: meta.MediaType})
		}
	}
	if (err != nil || commitErr != nil) && f.file != nil {
		os.Remove(f.file.Name())
	}
	if errors.Is(err, oci.ErrDigestMismatch) {
		f.mu.Lock()
		blamers := append(f.blamers, f.rangeBlamers...)
		f.mu.Unlock()
		for _, b := range blamers {
			b.Blame(err)
		}
	}
	// Remove from the map before waking readers: a caller arriving now
	// finds the committed file, or starts afresh after a failure.
	s.mu.Lock()
	delete(s.fills, f.d)
	if len(s.fills) == 0 && s.idle != nil {
		close(s.idle) // WaitFills
		s.idle = nil
	}
	s.mu.Unlock()
	f.update(func() { f.done, f.err, f.commitErr = true, err, commitErr })
	if err == nil {
		err = commitErr // for the counts and the log
	}
	reason := failReason(err)
	if st.pt != nil && reason == "" {
		reason = "disk" // served whole, stored nothing
		if f.overQuota.Load() {
			reason = "quota"
		}
	}
	s.m.FillEnded(reason)
	source := f.latestSource()
	s.m.FillDone(source, st.written, time.Since(start), err == nil && st.pt == nil)
	attrs := []any{"digest", f.d, "repo", meta.Repo, "bytes", st.written, "source", source, "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil {
		s.log.Warn("fill failed", append(attrs, "err", err)...)
		return
	}
	s.log.Info("fill", attrs...)
}

// logProgress logs a long fill's progress every ProgressInterval until
// stop is closed: bytes so far, size when known, rate, source and readers.
func (s *Store) logProgress(f *fill, meta FillMeta, start time.Time, stop <-chan struct{}) {
	t := time.NewTicker(s.opts.ProgressInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		f.mu.Lock()
		size, written, source, readers := f.size, f.written, f.source, len(f.readers)
		f.mu.Unlock()
		elapsed := time.Since(start)
		s.log.Info("fill progress", "digest", f.d, "repo", meta.Repo, "bytes", written, "size", size,
			"rate", fmt.Sprintf("%.1fMB/s", float64(written)/1e6/elapsed.Seconds()), "source", source,
			"readers", readers, "elapsed", elapsed.Round(time.Second))
	}
}

func (f *fill) latestSource() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.source
}

// download copies from the sources into f until the blob is whole. A broken
// stream resumes at the byte reached; MaxAttempts calls in a row that bring
// no byte end the fill.
func (s *Store) download(ctx context.Context, f *fill, h io.Writer, open Opener) error {
	ph := newPipeHash(h)
	defer ph.wait() // h holds every byte when download returns
	for failures := 0; ; {
		st := f.state()
		if st.size >= 0 && st.written == st.size {
			return nil
		}
		n, done, err := s.attempt(ctx, f, ph, open)
		if done && (err == nil || ctx.Err() != nil || errors.Is(err, oci.ErrTooLarge)) {
			return err
		}
		if n > 0 {
			failures = 0
		}
		failures++
		if done || failures >= s.opts.MaxAttempts || !retryable(err) || errors.Is(err, errStalled) {
			next := f.fallback()
			if next == nil && !errors.Is(err, errStalled) {
				return err
			}
			if next != nil {
				s.log.Warn("fill falls back to a joiner's source", "digest", f.d, "offset", f.state().written, "err", err)
				open, failures = next, 0
				continue
			}
		}
		s.log.Debug("fill resumes", "digest", f.d, "offset", f.state().written, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(failures) * 100 * time.Millisecond):
		}
	}
}

// attempt reads one stream from open. done reports that the fill is over:
// the blob is whole (err nil) or it cannot succeed (err set).
func (s *Store) attempt(ctx context.Context, f *fill, ph *pipeHash, open Opener) (n int64, done bool, err error) {
	offset := f.state().written
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := f.watch(s.opts.StallAfter, cancel)
	defer stall.Stop()
	rc, size, source, err := open(ctx, offset)
	if err != nil {
		return 0, false, err
	}
	defer rc.Close()
	if b, ok := rc.(Blamer); ok {
		f.blamers = append(f.blamers, b) // only this goroutine touches blamers
	}
	if err := f.setSize(size); err != nil {
		return 0, true, err
	}
	s.checkRoom(f, size)
	f.mu.Lock()
	f.source = source
	f.mu.Unlock()
	for {
		buf := ph.next()
		m, rerr := rc.Read(buf)
		if m == 0 {
			ph.unused(buf)
		} else {
			stall.Reset(s.opts.StallAfter)
			if werr := s.append(ctx, f, buf[:m], ph); werr != nil {
				return n, true, werr
			}
			n += int64(m)
			s.m.Fetched(source, int64(m))
		}
		switch {
		case rerr == io.EOF:
			st := f.state()
			if st.size < 0 { // unknown size: the end of the stream is the end
				f.update(func() { f.size = f.written })
				return n, true, nil
			}
			if st.written == st.size {
				return n, true, nil
			}
			return n, false, fmt.Errorf("%s: stream ended at %d of %d bytes: %w", source, st.written, st.size, io.ErrUnexpectedEOF)
		case rerr != nil:
			return n, false, fmt.Errorf("%s: %w", source, rerr)
		}
	}
}

// setSize records the total size a source reported, refusing a source that
// contradicts an earlier one.
func (f *fill) setSize(size int64) error {
	st := f.state()
	switch {
	case f.sized && size > f.limit:
		return fmt.Errorf("blob %s: the source says %d bytes, over %s (%d): %w", f.d, size, f.limitWhy, f.limit, oci.ErrTooLarge)
	case size < 0 || size == st.size:
		return nil
	case st.size >= 0:
		return fmt.Errorf("blob %s: sources disagree on its size (%d, %d): %w", f.d, st.size, size, oci.ErrDigestMismatch)
	}
	f.update(func() { f.size = size })
	return nil
}

// append writes p at the end of the file and hands it to the hash,
// refusing bytes past the known size. A write error switches the fill to
// pass-through. p is a buffer from ph, which append gives back.
func (s *Store) append(ctx context.Context, f *fill, p []byte, ph *pipeHash) error {
	st := f.state()
	if st.size >= 0 && st.written+int64(len(p)) > st.size {
		ph.unused(p)
		return fmt.Errorf("blob %s: more than %d bytes: %w", f.d, st.size, oci.ErrDigestMismatch)
	}
	if f.limit > 0 && (f.sized || st.size < 0) && st.written+int64(len(p)) > f.limit {
		ph.unused(p)
		return fmt.Errorf("blob %s: more than %s (%d bytes): %w", f.d, f.limitWhy, f.limit, oci.ErrTooLarge)
	}
	n := int64(len(p))
	if st.pt == nil && !s.checkRoom(f, st.written+n) {
		if st.written+n > f.reserved {
			f.reserve(st.written, st.size)
		}
		_, err := s.writeAt(f.file, p, st.written)
		if err == nil {
			ph.hash(p) // readers may take these bytes before they are hashed: the last one waits for the digest
			s.pending.Add(n)
			f.update(func() { f.written += n })
			return nil
		}
		s.passThrough(f, fmt.Errorf("write %s: %w", f.d, err))
	}
	if err := f.pt.waitRoom(ctx, f, len(p), s.opts.PassThroughWait); err != nil {
		ph.unused(p)
		return err
	}
	f.update(func() { f.pt.write(f, p) })
	ph.hash(p)
	return nil
}

// preallocAhead is how far past the bytes written a fill of known size
// preallocates its temp file.
const preallocAhead = 32 << 20

// reserve preallocates the temp file's blocks from f.reserved to
// preallocAhead past written, never past size, the size the source
// declared (and append enforces): writing into blocks allocated ahead
// costs the page cache less CPU than allocating them a page at a time
// (ext4's delayed allocation). A source that declares more than it sends
// holds at most preallocAhead bytes of disk beyond its last byte, until
// the fill fails and its temp file goes. A failure (a full disk, a file
// system without fallocate) only ends preallocating: the writes go on
// and meet the full disk themselves.
func (f *fill) reserve(written, size int64) {
	if f.noPrealloc || size <= 0 {
		return
	}
	end := min(size, written+preallocAhead)
	if end <= f.reserved {
		return
	}
	if err := preallocate(f.file, f.reserved, end-f.reserved); err != nil {
		f.noPrealloc = true
		return
	}
	f.reserved = end
}

// retryable reports whether another attempt may succeed where err failed.
func retryable(err error) bool {
	for _, final := range []error{oci.ErrBlobUnknown, oci.ErrManifestUnknown, oci.ErrNameUnknown,
		oci.ErrUnauthorized, oci.ErrDenied, oci.ErrDigestMismatch, oci.ErrTooManyRequests, oci.ErrBadUpstream, oci.ErrTooLarge,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}

func failReason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, oci.ErrDigestMismatch):
		return "digest"
	case errors.Is(err, oci.ErrTooLarge):
		return "size"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, errFellBehind):
		return "disk"
	default:
		return "source"
	}
}

// Join returns a reader of d when the store holds it, or when a fill of it
// is under way and its size is already known, so the reader never waits
// for a source to answer. It starts nothing.
func (s *Store) Join(ctx context.Context, d digest.Digest) (*Blob, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.fills[d]; ok {
		if st := f.state(); st.size < 0 || st.err != nil || !f.joinable() {
			return nil, false
		}
		return newFillBlob(ctx, f), true
	}
	if file, size, err := s.openCommitted(d); err == nil {
		return Committed(file, size), true
	}
	return nil, false
}

// WaitFills blocks until no fill is under way (each one committed or
// failed), or ctx ends: then it returns ctx's error and the fills go on
// until Close cancels them. A fill started meanwhile is waited for too.
// It may run concurrently with everything else; a node's graceful stop
// calls it once its listeners are closed.
func (s *Store) WaitFills(ctx context.Context) error {
	for {
		s.mu.Lock()
		if len(s.fills) == 0 {
			s.mu.Unlock()
			return nil
		}
		if s.idle == nil {
			s.idle = make(chan struct{})
		}
		idle := s.idle
		s.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// FillInfo is one fill under way, as the status page shows it.
type FillInfo struct {
	Digest  digest.Digest `json:"digest"`
	Repo    string        `json:"repo"`
	Source  string        `json:"source"`  // where the latest bytes came from
	Size    int64         `json:"size"`    // -1 until a source tells it
	Written int64         `json:"written"` // bytes received so far
	Readers int           `json:"readers"` // clients reading it now
	Started time.Time     `json:"started"`
}

// Fills lists the fills under way, oldest first.
func (s *Store) Fills() []FillInfo {
	s.mu.Lock()
	fills := make([]*fill, 0, len(s.fills))
	for _, f := range s.fills {
		fills = append(fills, f)
	}
	s.mu.Unlock()
	out := make([]FillInfo, 0, len(fills))
	for _, f := range fills {
		f.mu.Lock()
		out = append(out, FillInfo{Digest: f.d, Repo: f.repo, Source: f.source, Size: f.size, Written: f.written, Readers: len(f.readers), Started: f.started})
		f.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b FillInfo) int { return a.Started.Compare(b.Started) })
	return out
}

// errStalled ends an attempt whose source sent nothing for StallAfter
// while a fallback source waits.
var errStalled = errors.New("source stalled, a fallback waits")

// lend adds a joiner's Opener as a fallback when its origin differs from
// the fill's and has not lent one yet.
func (f *fill) lend(origin string, open Opener) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if origin == "" || origin == f.origin || f.lent[origin] {
		return
	}
	f.lent[origin] = true
	f.fallbacks = append(f.fallbacks, open)
}

// fallback takes the next fallback Opener, nil when none is left.
func (f *fill) fallback() Opener {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.fallbacks) == 0 {
		return nil
	}
	next := f.fallbacks[0]
	f.fallbacks = f.fallbacks[1:]
	return next
}

// watch returns a timer that, after d without a Reset, cancels the
// attempt when a fallback waits (and otherwise keeps watching).
func (f *fill) watch(d time.Duration, cancel context.CancelCauseFunc) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		f.mu.Lock()
		waiting := len(f.fallbacks) > 0
		f.mu.Unlock()
		if waiting {
			cancel(errStalled)
			return
		}
		t.Reset(d)
	})
	return t
}
