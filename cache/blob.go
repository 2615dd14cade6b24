package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/berth-registry/berth/pkg/metrics"
)

// Blob is content opened for reading: a committed file, or a fill still
// downloading. A Blob is used by one goroutine; Close it when done.
type Blob struct {
	file *os.File // committed content
	size int64

	f   *fill // fill under way; nil for committed content
	ctx context.Context
	pos int64
	// own is the reader's own descriptor of the fill's file (SendTo),
	// opened at its first use; ownPos is its offset, -1 when unsure.
	own    *os.File
	ownPos int64
	// early lets this reader take the blob's last byte before the digest
	// checks (ServeUnverified).
	early bool
}

func newFillBlob(ctx context.Context, f *fill) *Blob {
	b := &Blob{f: f, ctx: ctx, size: -1}
	f.mu.Lock()
	f.readers[b] = 0
	if f.pt != nil {
		f.pt.pos[b] = 0
	}
	f.mu.Unlock()
	return b
}

// File returns the committed file, or nil while the blob is downloading.
// Serving the *os.File itself lets the kernel send it (sendfile).
func (b *Blob) File() *os.File { return b.file }

// Filling reports whether the blob is still downloading.
func (b *Blob) Filling() bool { return b.f != nil }

// ServeUnverified lets this reader take the blob's last byte as soon as
// it lands, before the whole digest checks: for a reader that hashes every
// byte itself and never serves them as a clean end before its own check (a
// cluster peer relaying the blob down its tree). Each level of a relay tree
// then need not wait for its parent's whole blob (with stripes, for the
// parent's other stripes) to get the last byte of the last stripe. Every
// other byte reaches such a reader unverified anyway; a reader that is not
// told so keeps the last byte held back.
func (b *Blob) ServeUnverified() { b.early = true }

// Wait blocks until the blob's size is known and returns it. It fails when
// the fill fails before that, or when the Blob's context ends.
func (b *Blob) Wait() (int64, error) {
	if b.f == nil {
		return b.size, nil
	}
	for {
		st := b.f.state()
		if st.err != nil {
			return 0, st.err
		}
		if st.size >= 0 { // a known size is final once a source has said it
			b.size = st.size
			return st.size, nil
		}
		select {
		case <-st.wake:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

// Done blocks until the blob's fill ends and returns its error: nil once
// the blob is verified and committed. It returns at once for a committed
// blob, and nil as soon as the fill passes through (no disk space: nothing
// will be stored, and a reader that does not read would only hold the ring
// back). It fails when the Blob's context ends first.
func (b *Blob) Done() error {
	if b.f == nil {
		return nil
	}
	for {
		st := b.f.state()
		if st.done || st.pt != nil {
			if st.err == nil && st.done {
				b.f.mu.Lock()
				defer b.f.mu.Unlock()
				return b.f.commitErr
			}
			return st.err
		}
		select {
		case <-st.wake:
		case <-b.ctx.Done():
			return b.ctx.Err()
		}
	}
}

// Verified blocks until every byte of the blob is in and matches its
// digest, and returns nil; making the copy durable (fsync, link, index) may
// still be under way, and a failure there loses only the cached copy. It
// returns the fill's error when the fill fails first, nil at once for a
// committed blob and as soon as the fill passes through (as Done does). It
// fails when the Blob's context ends first.
func (b *Blob) Verified() error {
	if b.f == nil {
		return nil
	}
	for {
		st := b.f.state()
		if st.err != nil {
			return st.err
		}
		if st.verified || st.done || st.pt != nil {
			return nil
		}
		select {
		case <-st.wake:
		case <-b.ctx.Done():
			return b.ctx.Err()
		}
	}
}

// Read reads the next bytes, waiting for them to land when the blob is
// still downloading. The last byte is held back until every byte is in
// and matches the digest, so a reader never sees a clean end of bytes that
// fail it: it sees the fill's error instead. It is not held for the
// commit (fsync and link), which follows.
func (b *Blob) Read(p []byte) (int, error) {
	if b.f == nil {
		return b.file.Read(p)
	}
	for {
		st := b.f.state()
		if st.err != nil {
			return 0, st.err
		}
		limit := st.written
		if !st.verified && !b.early {
			limit-- // hold back the last byte until the digest checks
		}
		if st.verified && b.pos >= st.written {
			return 0, io.EOF
		}
		if st.ranges && b.pos >= limit {
			limit = b.f.readable(b.pos, !b.early) // a range fill has bytes past the prefix
		}
		if b.pos < limit {
			n, err := b.readAt(p, limit, st.pt)
			b.pos += int64(n)
			return n, err
		}
		select {
		case <-st.wake:
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
}

// readAt reads at b.pos, below limit, from the file; a fill passing
// through (pt) reads its own way.
func (b *Blob) readAt(p []byte, limit int64, pt *passThru) (int, error) {
	if pt != nil {
		return pt.readAt(b, p, limit)
	}
	n, err := b.f.file.ReadAt(p[:min(int64(len(p)), limit-b.pos)], b.pos)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

// Seek sets the offset of the next Read. Seeking from the end waits for
// the size; http.ServeContent seeks that way to learn it.
func (b *Blob) Seek(offset int64, whence int) (int64, error) {
	if b.f == nil {
		return b.file.Seek(offset, whence)
	}
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += b.pos
	case io.SeekEnd:
		size, err := b.Wait()
		if err != nil {
			return 0, err
		}
		offset += size
	default:
		return 0, fmt.Errorf("seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek: negative offset %d", offset)
	}
	b.pos = offset
	b.f.seeked(b, offset)
	return offset, nil
}

// Close releases the Blob. A fill goes on without its readers.
func (b *Blob) Close() error {
	if b.own != nil {
		b.own.Close()
		b.own = nil
	}
	switch {
	case b.f != nil:
		b.f.leave(b)
		b.f = nil
	case b.file != nil:
		err := b.file.Close()
		b.file = nil
		return err
	}
	return nil
}

// Committed wraps a committed file from Store.Open as a Blob.
func Committed(f *os.File, size int64) *Blob { return &Blob{file: f, size: size} }

// Source names where the blob's bytes come from: "local" for committed
// content, else the source of the fill's latest bytes.
func (b *Blob) Source() string {
	if b.f == nil {
		return metrics.SourceLocal
	}
	b.f.mu.Lock()
	defer b.f.mu.Unlock()
	return b.f.source
}

// SendTo writes the next n bytes of the blob to w (every byte left when n
// is negative) and moves past them, waiting for the bytes of a fill under
// way as Read does, and with the same hold on the last byte. Bytes that
// are on disk go to w as a section of a file: an *os.File of the reader's
// own behind an io.LimitedReader, so a w whose ReadFrom takes files
// (net/http's response on a TCP connection) sends them with sendfile,
// with no copy through user space, each time as many as have landed. The
// reader's descriptor is of the same inode the commit links into place, so
// once the fill is verified the rest goes in one call. A fill passing
// through (no disk space) is copied with Read. Fewer than n bytes come
// with an error: the fill's, the context's, or w's.
func (b *Blob) SendTo(w io.Writer, n int64) (int64, error) {
	if n < 0 {
		n = 1<<63 - 1
	}
	if b.f == nil {
		m, err := io.Copy(w, &io.LimitedReader{R: b.file, N: n})
		if err == nil && m < n && n != 1<<63-1 {
			err = io.ErrUnexpectedEOF
		}
		return m, err
	}
	var sent int64
	for sent < n {
		st := b.f.state()
		if st.err != nil {
			return sent, st.err
		}
		limit := st.written
		if !st.verified && !b.early {
			limit-- // hold back the last byte until the digest checks
		}
		if st.ranges && b.pos >= limit {
			limit = b.f.readable(b.pos, !b.early) // a range fill has bytes past the prefix
		}
		switch {
		case st.verified && b.pos >= st.written:
			if n == 1<<63-1 {
				return sent, nil
			}
			return sent, io.ErrUnexpectedEOF
		case b.pos < limit && st.pt == nil:
			m, err := b.sendFile(w, min(limit-b.pos, n-sent))
			sent += m
			if err != nil {
				return sent, err
			}
			continue
		case b.pos < limit:
			m, err := io.CopyBuffer(writerOnly{w}, &io.LimitedReader{R: b, N: min(limit-b.pos, n-sent)}, make([]byte, 32<<10))
			sent += m
			if err != nil {
				return sent, err
			}
			continue
		}
		select {
		case <-st.wake:
		case <-b.ctx.Done():
			return sent, b.ctx.Err()
		}
	}
	return sent, nil
}

// sendFile writes the n bytes at b.pos, all in the fill's file, to w from
// the reader's own descriptor; without one it copies them with Read.
func (b *Blob) sendFile(w io.Writer, n int64) (int64, error) {
	f, err := b.section()
	if err != nil { // no descriptor of its own: copy
		return io.CopyBuffer(writerOnly{w}, &io.LimitedReader{R: b, N: n}, make([]byte, 32<<10))
	}
	m, err := io.Copy(w, &io.LimitedReader{R: f, N: n})
	b.pos += m
	b.ownPos += m
	if err != nil {
		b.ownPos = -1
		return m, err
	}
	if m < n {
		b.ownPos = -1
		return m, fmt.Errorf("blob %s: file ends at %d: %w", b.f.d, b.pos, io.ErrUnexpectedEOF)
	}
	return m, nil
}

// section returns the reader's own descriptor of the fill's file at b.pos,
// opening it the first time: a new open file description (its offset
// is the reader's alone), of the same inode even after the temp name is
// gone. The fill's file stays open while the reader is registered.
func (b *Blob) section() (*os.File, error) {
	if b.own == nil {
		if b.f.file == nil {
			return nil, errors.New("no file")
		}
		f, err := reopen(b.f.file)
		if err != nil {
			return nil, err
		}
		b.own, b.ownPos = f, 0
	}
	if b.ownPos != b.pos {
		if _, err := b.own.Seek(b.pos, io.SeekStart); err != nil {
			b.ownPos = -1
			return nil, err
		}
		b.ownPos = b.pos
	}
	return b.own, nil
}

// writerOnly hides a writer's ReadFrom, so a copy through it uses the
// buffer given.
type writerOnly struct{ io.Writer }

// Failed returns the error of a fill that failed before its bytes were
// verified, nil otherwise (and for committed content).
func (b *Blob) Failed() error {
	if b.f == nil {
		return nil
	}
	return b.f.state().err
}

// reopen opens f, an open file, again: a new open file description with
// an offset of its own, of the same inode even once f's name is gone.
func reopen(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var path string
	if err := rc.Control(func(fd uintptr) { path = "/proc/self/fd/" + strconv.FormatUint(uint64(fd), 10) }); err != nil {
		return nil, err
	}
	return os.Open(path)
}
