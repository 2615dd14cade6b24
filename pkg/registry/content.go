package registry

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// maxRanges bounds the ranges one request may ask for. A request for more
// is answered with the whole content (RFC 9110 lets a server ignore
// Range), never with a multipart body of hundreds of tiny parts.
const maxRanges = 8

// serveContent answers GET and HEAD of content with http.ServeContent
// (Range, If-None-Match, and sendfile when content is a bare *os.File),
// after cleaning the Range header ServeContent would misread, and with
// every 4xx it would write as text turned into OCI errcode JSON.
func serveContent(w http.ResponseWriter, r *http.Request, content io.ReadSeeker) {
	if h := r.Header.Get("Range"); h != "" {
		size, err := content.Seek(0, io.SeekEnd)
		if err == nil {
			_, err = content.Seek(0, io.SeekStart)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		clean, ok := cleanRange(h, size)
		if !ok {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			writeCode(w, errcode.ErrorCodeRangeInvalid, http.StatusRequestedRangeNotSatisfiable, "range "+strconv.Quote(h)+" not satisfiable")
			return
		}
		r.Header.Set("Range", clean)
		if clean == "" {
			r.Header.Del("Range")
		}
	}
	http.ServeContent(&errcodeWriter{w: w}, r, "", time.Time{}, content)
}

// cleanRange rewrites a Range header for content of size bytes. It
// returns "" (serve the whole content) for a header it does not
// understand, which RFC 9110 lets a server ignore, and for more than
// maxRanges ranges; it drops ranges that cannot be satisfied (a suffix of
// 0 bytes, a start at or past the end), and says !ok when none is left:
// 416. Whatever it returns, ServeContent answers with a valid
// Content-Range.
func cleanRange(h string, size int64) (clean string, ok bool) {
	specs, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return "", true
	}
	var kept []string
	for _, spec := range strings.Split(specs, ",") {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			continue // empty list elements are allowed
		}
		first, last, found := strings.Cut(spec, "-")
		if !found {
			return "", true
		}
		var start int64
		if first == "" { // a suffix: the last n bytes
			n, err := parsePos(last)
			if err != nil {
				return "", true
			}
			if n == 0 || size == 0 {
				continue
			}
		} else {
			var err error
			if start, err = parsePos(first); err != nil {
				return "", true
			}
			if last != "" {
				end, err := parsePos(last)
				if err != nil || end < start {
					return "", true
				}
			}
			if start >= size {
				continue
			}
		}
		kept = append(kept, spec)
	}
	switch {
	case len(kept) == 0:
		return "", false
	case len(kept) > maxRanges:
		return "", true
	}
	return "bytes=" + strings.Join(kept, ","), true
}

// parsePos parses a non-negative decimal of digits only (no sign).
func parsePos(s string) (int64, error) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}

// errcodeWriter passes a response through unless its status is a 4xx or
// 5xx, which ServeContent writes as text: that becomes OCI errcode JSON
// (416 with RANGE_INVALID), and ServeContent's text body is dropped. It
// forwards ReadFrom so a file still goes out by sendfile.
type errcodeWriter struct {
	w       http.ResponseWriter
	dropped bool // the body being written is ServeContent's text error
}

func (e *errcodeWriter) Header() http.Header { return e.w.Header() }

func (e *errcodeWriter) WriteHeader(code int) {
	if code < 400 {
		e.w.WriteHeader(code)
		return
	}
	e.dropped = true
	ec := errcode.ErrorCodeUnknown
	if code == http.StatusRequestedRangeNotSatisfiable {
		ec = errcode.ErrorCodeRangeInvalid
	}
	e.w.Header().Del("X-Content-Type-Options")
	writeCode(e.w, ec, code, http.StatusText(code))
}

func (e *errcodeWriter) Write(p []byte) (int, error) {
	if e.dropped {
		return len(p), nil
	}
	return e.w.Write(p)
}

func (e *errcodeWriter) ReadFrom(r io.Reader) (int64, error) {
	if e.dropped {
		return io.Copy(io.Discard, r)
	}
	return io.Copy(e.w, r) // the inner writer's ReadFrom: sendfile for files
}

func (e *errcodeWriter) Unwrap() http.ResponseWriter { return e.w }

// writeCode writes one errcode with status.
func writeCode(w http.ResponseWriter, code errcode.ErrorCode, status int, msg string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(errcode.Errors{code.WithMessage(msg)})
}
