package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distribution/distribution/v3/registry/api/errcode"
)

// serve runs serveContent over data with the given request headers.
func serve(data []byte, header ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/v2/a/blobs/x", nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	w.Header().Set("ETag", `"d"`)
	serveContent(w, r, bytes.NewReader(data))
	return w
}

// checkResponse fails unless w is a well-formed answer for data: the whole
// content, valid ranges of it (at most maxRanges), or an errcode JSON 4xx.
func checkResponse(t *testing.T, w *httptest.ResponseRecorder, data []byte) {
	t.Helper()
	size := len(data)
	switch w.Code {
	case http.StatusOK:
		if !bytes.Equal(w.Body.Bytes(), data) {
			t.Fatalf("200 with %d bytes, want the %d of the content", w.Body.Len(), size)
		}
	case http.StatusPartialContent:
		ct := w.Header().Get("Content-Type")
		if mt, params, _ := mime.ParseMediaType(ct); mt == "multipart/byteranges" {
			mr := multipart.NewReader(w.Body, params["boundary"])
			n := 0
			for ; ; n++ {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("multipart: %v", err)
				}
				body, _ := io.ReadAll(p)
				checkPart(t, p.Header.Get("Content-Range"), body, data)
			}
			if n > maxRanges || n == 0 {
				t.Fatalf("multipart body with %d parts", n)
			}
			return
		}
		checkPart(t, w.Header().Get("Content-Range"), w.Body.Bytes(), data)
	case http.StatusRequestedRangeNotSatisfiable, http.StatusPreconditionFailed:
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%d with Content-Type %q, want errcode JSON", w.Code, ct)
		}
		var errs struct{ Errors []errcode.Error }
		if err := json.Unmarshal(w.Body.Bytes(), &errs); err != nil || len(errs.Errors) != 1 {
			t.Fatalf("%d body %q is not one errcode: %v", w.Code, w.Body, err)
		}
		if w.Code == http.StatusRequestedRangeNotSatisfiable {
			if got, want := w.Header().Get("Content-Range"), fmt.Sprintf("bytes */%d", size); got != want {
				t.Fatalf("416 Content-Range %q, want %q", got, want)
			}
			if errs.Errors[0].Code != errcode.ErrorCodeRangeInvalid {
				t.Fatalf("416 code %v", errs.Errors[0].Code)
			}
		}
	default:
		t.Fatalf("status %d", w.Code)
	}
}

func checkPart(t *testing.T, contentRange string, body, data []byte) {
	t.Helper()
	var start, end, total int
	if _, err := fmt.Sscanf(contentRange, "bytes %d-%d/%d", &start, &end, &total); err != nil {
		t.Fatalf("Content-Range %q: %v", contentRange, err)
	}
	if total != len(data) || start < 0 || end < start || end >= total {
		t.Fatalf("invalid Content-Range %q for %d bytes", contentRange, len(data))
	}
	if !bytes.Equal(body, data[start:end+1]) {
		t.Fatalf("range %q: body %q, want %q", contentRange, body, data[start:end+1])
	}
}

func TestServeContentRange(t *testing.T) {
	t.Parallel()
	data := []byte("0123456789")
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("%d-%d", i%10, i%10)
	}
	for _, tc := range []struct {
		name, rng   string
		status      int
		contentRang string
	}{
		{"none", "", 200, ""},
		{"suffix zero", "bytes=-0", 416, "bytes */10"},
		{"suffix zero beside a good one", "bytes=0-0,-0", 206, "bytes 0-0/10"},
		{"start past the end", "bytes=10-", 416, "bytes */10"},
		{"garbage", "bytes=abc", 200, ""},
		{"other unit", "items=0-1", 200, ""},
		{"negative start", "bytes=--1", 200, ""},
		{"reversed", "bytes=5-2", 200, ""},
		{"one range", "bytes=2-4", 206, "bytes 2-4/10"},
		{"end past the end", "bytes=8-100", 206, "bytes 8-9/10"},
		{"suffix", "bytes=-3", 206, "bytes 7-9/10"},
		{"suffix beyond the size", "bytes=-30", 206, "bytes 0-9/10"},
		{"a few ranges", "bytes=0-1,4-5,8-", 206, ""},
		{"too many ranges", "bytes=" + strings.Join(many, ","), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := serve(data, "Range", tc.rng)
			if w.Code != tc.status {
				t.Fatalf("Range %q: status %d, want %d; body %q", tc.rng, w.Code, tc.status, w.Body)
			}
			if got := w.Header().Get("Content-Range"); got != tc.contentRang {
				t.Errorf("Content-Range %q, want %q", got, tc.contentRang)
			}
			checkResponse(t, w, data)
		})
	}
}

func TestServeContentPreconditionIsErrcode(t *testing.T) {
	t.Parallel()
	w := serve([]byte("abc"), "If-Match", `"other"`)
	if w.Code != http.StatusPreconditionFailed {
		t.Fatalf("status %d", w.Code)
	}
	checkResponse(t, w, []byte("abc"))
}

func TestServeContentEmptyRangeOfEmptyContent(t *testing.T) {
	t.Parallel()
	w := serve(nil, "Range", "bytes=0-")
	if w.Code != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("status %d", w.Code)
	}
	checkResponse(t, w, nil)
}

// FuzzServeContentRange: whatever the Range header, the answer is the whole
// content, valid ranges of it (never more than maxRanges parts), or a 416
// in errcode JSON with Content-Range bytes */size.
func FuzzServeContentRange(f *testing.F) {
	for _, s := range []string{"bytes=-0", "bytes=0-0,-0", "bytes=0-", "bytes=-1", "bytes=3-2", "bytes=0-1,1-2,2-3",
		"bytes=99999999999999999999-", "bytes= 1 - 2 ", "bytes=,,", "bytes=0-0,0-0,0-0,0-0,0-0,0-0,0-0,0-0,0-0"} {
		f.Add(s, uint8(10))
	}
	f.Fuzz(func(t *testing.T, rng string, size uint8) {
		data := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz"), 10)[:int(size)%200]
		checkResponse(t, serve(data, "Range", rng), data)
	})
}
