package registry

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
)

// blob serves GET and HEAD /v2/<name>/blobs/<digest>, with Range, from the
// store or from a fill as it downloads.
func (h *Handler) blob(w http.ResponseWriter, r *http.Request, rq oci.Request) error {
	if rq.Via == oci.ViaPeerRelay && h.opts.Peers != nil {
		// A relay parent serves a bounded number of copies; beyond that the
		// asker goes to the next node of the plan.
		release, ok := h.opts.Peers.AdmitCopy(r, rq.Digest)
		if !ok {
			return fmt.Errorf("blob %s: %w", rq.Digest, errBusy)
		}
		defer release()
	}
	b, err := h.mirror.Blob(r.Context(), rq)
	if err != nil {
		return err
	}
	defer b.Close()
	if rq.Via == oci.ViaPeerRelay {
		// A relay child hashes every byte it gets and holds its own last
		// byte until its digest checks: it need not wait for this node's.
		b.ServeUnverified()
	}
	if b.Filling() && (rq.Via == oci.ViaPeerOwner || rq.Via == oci.ViaPeerRelay) {
		// Tell the asking peer at once that this node is working on it, so
		// its short time-to-first-byte bound is met before upstream answers.
		w.WriteHeader(http.StatusEarlyHints)
	}
	size, err := b.Wait()
	if err != nil {
		return err
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/octet-stream") // before ServeContent, or it sniffs
	hd.Set("Docker-Content-Digest", rq.Digest.String())
	hd.Set("ETag", `"`+rq.Digest.String()+`"`)
	hd.Set("Cache-Control", "max-age=31536000")
	sw, _ := w.(*statusWriter)
	before := written(sw)
	if f := b.File(); f != nil {
		serveContent(w, r, f) // the bare *os.File keeps sendfile
		h.m.Served(metrics.SourceLocal, written(sw)-before)
		h.servedBlob(w, rq)
		return nil
	}
	if wholeGet(r) {
		writeWholeHeader(w, size)
		err = sendWhole(w, r, b, size)
	} else {
		err = serveFilling(w, r, b)
	}
	h.m.Served(b.Source(), written(sw)-before)
	if err != nil {
		// The fill failed after the body began: break the response so the
		// client sees a broken body, never a clean end of wrong bytes.
		h.log.Warn("blob stream broken", "digest", rq.Digest, "repo", rq.Repo, "err", err)
		panic(http.ErrAbortHandler)
	}
	h.servedBlob(w, rq)
	return nil
}

// serveFilling serves a blob still filling, with Range and HEAD, and
// returns the fill's error if it failed after the body began.
func serveFilling(w http.ResponseWriter, r *http.Request, b *cache.Blob) error {
	er := &errReader{r: b}
	content := struct {
		io.Reader
		io.Seeker
	}{er, b}
	fs := &fillSender{ResponseWriter: w, b: b, content: content}
	defer boundUnsent(r)()
	serveContent(fs, r, content)
	if er.err != nil {
		return er.err
	}
	return fs.err
}

// wholeGet reports whether r is a GET of the whole content with no
// condition: what http.ServeContent would answer with a plain 200 and
// every byte, as it does almost every client of a blob in flight.
func wholeGet(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, k := range []string{"Range", "If-Match", "If-None-Match", "If-Unmodified-Since", "If-Modified-Since", "If-Range"} {
		if _, ok := r.Header[k]; ok {
			return false
		}
	}
	return true
}

// writeWholeHeader writes and sends the header of a wholeGet's 200, as
// http.ServeContent would, right here: not at the body's first write, at
// the bottom of the handler's call chain (net/http's chunkWriter.writeHeader
// alone takes 2.8 KiB of stack), where it took the goroutine's stack past
// 8 KiB to 16 KiB. Every client of a blob in flight keeps its goroutine
// for as long as the blob takes to arrive: with 500 of them berth's peak
// RSS was 40-41 MiB, 34 once their stacks stayed at 8 KiB (test/bench
// -figures rss500).
func writeWholeHeader(w http.ResponseWriter, size int64) {
	h := w.Header()
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	flushInner(w)
}

// flushInner flushes the innermost response writer that can, past the
// wrappers (each one a frame more).
func flushInner(w http.ResponseWriter) {
	for {
		switch t := w.(type) {
		case interface{ FlushError() error }:
			_ = t.FlushError()
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		case http.Flusher:
			t.Flush()
			return
		default:
			return
		}
	}
}

// sendWhole sends the body of a wholeGet of a blob still filling, whose
// header writeWholeHeader sent, with Blob.SendTo and without
// http.ServeContent's call chain under it (see writeWholeHeader). It
// returns the fill's error if the fill failed after the body began.
func sendWhole(w http.ResponseWriter, r *http.Request, b *cache.Blob, size int64) error {
	defer boundUnsent(r)()
	if _, err := b.SendTo(w, size); err != nil && b.Failed() != nil {
		return err
	}
	return nil
}

// fillSender sends the body of a blob still filling with Blob.SendTo, so
// the bytes already on disk reach the client by sendfile rather than a
// copy per reader: ServeContent copies content through an
// io.LimitedReader, which fillSender's ReadFrom recognises. Anything else
// (a multipart body) is copied as it comes. err is the fill's error, if
// it failed mid-body.
type fillSender struct {
	http.ResponseWriter
	b       *cache.Blob
	content io.Reader
	err     error
}

func (f *fillSender) ReadFrom(src io.Reader) (int64, error) {
	lr, ok := src.(*io.LimitedReader)
	if !ok || lr.R != f.content {
		return io.Copy(f.ResponseWriter, src)
	}
	n, err := f.b.SendTo(f.ResponseWriter, lr.N)
	lr.N -= n
	if err != nil && f.b.Failed() != nil {
		f.err = err
	}
	return n, err
}

func (f *fillSender) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// errBusy answers a relay request beyond the node's copy limit.
var errBusy = fmt.Errorf("serving its most copies of this blob to peers: ask the next node: %w", oci.ErrTooManyRequests)

// servedBlob audits a blob GET that sent content: a 200, or a 206 from its
// first byte (a client fetching in parallel ranges counts once). A HEAD
// and every error send no content and are not recorded.
func (h *Handler) servedBlob(w http.ResponseWriter, rq oci.Request) {
	sw, ok := w.(*statusWriter)
	if !ok || rq.Head || rq.Via != oci.ViaClient {
		return
	}
	if sw.status == http.StatusOK || sw.status == http.StatusPartialContent && strings.HasPrefix(w.Header().Get("Content-Range"), "bytes 0-") {
		h.mirror.Served(rq.Repo, "", rq.Digest, true)
	}
}

func written(sw *statusWriter) int64 {
	if sw == nil {
		return 0
	}
	return sw.bytes
}

// errReader remembers the first error other than io.EOF its reader gave.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && e.err == nil {
		e.err = err
	}
	return n, err
}

var _ io.ReadSeekCloser = (*cache.Blob)(nil)
