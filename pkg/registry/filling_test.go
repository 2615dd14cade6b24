package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

// fillingBlob starts a fill of random bytes fed through a pipe, and
// returns the blob, its bytes and the pipe's writing end.
func fillingBlob(t *testing.T, size int) (*cache.Blob, []byte, *io.PipeWriter) {
	t.Helper()
	store, err := cache.Open(t.TempDir(), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	data := make([]byte, size)
	rand.Read(data)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(io.ErrClosedPipe) })
	open := func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		return pr, int64(size), "test", nil
	}
	b, err := store.Fill(t.Context(), digest.FromBytes(data), cache.FillMeta{}, open)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, data, pw
}

// sendfileRecorder is a response writer with a ReadFrom, as net/http's is
// on a TCP connection; it counts what ReadFrom was given.
type sendfileRecorder struct {
	*httptest.ResponseRecorder
	sections, others int
}

func (r *sendfileRecorder) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if _, ok := lr.R.(*os.File); ok {
			r.sections++
			return io.Copy(r.ResponseRecorder, src)
		}
	}
	r.others++
	return io.Copy(r.ResponseRecorder, src)
}

// A blob still filling reaches the response writer as sections of a file
// (which net/http sends with sendfile), not through a copy per reader.
func TestServeFillingSendsFileSections(t *testing.T) {
	b, data, pw := fillingBlob(t, 2<<20)
	go func() { pw.Write(data); pw.Close() }()
	if _, err := b.Wait(); err != nil {
		t.Fatal(err)
	}
	rec := &sendfileRecorder{ResponseRecorder: httptest.NewRecorder()}
	if err := serveFilling(rec, httptest.NewRequest(http.MethodGet, "/v2/a/blobs/x", nil), b); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), data) {
		t.Fatalf("status %d, %d bytes: want 200 and the blob", rec.Code, rec.Body.Len())
	}
	if rec.sections == 0 || rec.others != 0 {
		t.Fatalf("ReadFrom given file sections %d times, other readers %d times", rec.sections, rec.others)
	}
}

// Over a real connection, a Range of a filling blob and the whole of it
// come out right.
func TestServeFillingOverTCP(t *testing.T) {
	b, data, pw := fillingBlob(t, 3<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := serveFilling(w, r, b); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	defer srv.Close()
	go func() { pw.Write(data[:1<<20]); pw.Write(data[1<<20:]); pw.Close() }()
	for _, tc := range []struct {
		rng  string
		want []byte
	}{{"bytes=100-199999", data[100:200000]}, {"", data}} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		if tc.rng != "" {
			req.Header.Set("Range", tc.rng)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Fatalf("range %q: %d bytes, %v", tc.rng, len(got), err)
		}
	}
}

// A plain GET of a filling blob (wholeGet: sendWhole, without
// http.ServeContent) gets the same answer ServeContent gives it: status,
// headers and every byte; a HEAD, a Range or a condition still goes to
// ServeContent.
func TestWholeGetOfAFillingBlobAnswersAsServeContent(t *testing.T) {
	b1, data1, pw1 := fillingBlob(t, 3<<20) // each server its own fill of the same size
	b2, data2, pw2 := fillingBlob(t, 3<<20)
	whole := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, err := b1.Wait()
		if err != nil || !wholeGet(r) {
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("Content-Type", "application/octet-stream") // as blob sets it
		writeWholeHeader(w, size)
		if err := sendWhole(w, r, b1, size); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	defer whole.Close()
	viaServeContent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := serveFilling(w, r, b2); err != nil {
			panic(http.ErrAbortHandler)
		}
	}))
	defer viaServeContent.Close()
	for _, f := range []struct {
		pw   *io.PipeWriter
		data []byte
	}{{pw1, data1}, {pw2, data2}} {
		go func() { f.pw.Write(f.data[:1<<20]); f.pw.Write(f.data[1<<20:]); f.pw.Close() }()
	}
	var answers [2]*http.Response
	for i, srv := range []struct {
		url  string
		data []byte
	}{{whole.URL, data1}, {viaServeContent.URL, data2}} {
		resp, err := whole.Client().Get(srv.url)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, srv.data) {
			t.Fatalf("GET %s: %d bytes, %v: want the blob", srv.url, len(got), err)
		}
		resp.Header.Del("Date")
		answers[i] = resp
	}
	if diff := cmp.Diff(answers[1].Header, answers[0].Header); diff != "" || answers[0].StatusCode != answers[1].StatusCode {
		t.Errorf("sendWhole: %d, ServeContent: %d; header (-ServeContent +sendWhole):\n%s", answers[0].StatusCode, answers[1].StatusCode, diff)
	}
	for _, tc := range []struct {
		name, method, header string
		want                 bool
	}{
		{"plain GET", http.MethodGet, "", true},
		{"HEAD", http.MethodHead, "", false},
		{"Range", http.MethodGet, "Range", false},
		{"If-None-Match", http.MethodGet, "If-None-Match", false},
		{"If-Range", http.MethodGet, "If-Range", false},
		{"If-Modified-Since", http.MethodGet, "If-Modified-Since", false},
	} {
		r := httptest.NewRequest(tc.method, "/v2/a/blobs/x", nil)
		if tc.header != "" {
			r.Header.Set(tc.header, "x")
		}
		if got := wholeGet(r); got != tc.want {
			t.Errorf("%s: wholeGet %v, want %v", tc.name, got, tc.want)
		}
	}
}
