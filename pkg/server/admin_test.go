package server_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/test/upstreamtest"
)

// TestAdminSurfacesOnlyOnAdminListener: what names repositories or costs
// CPU (metrics, the audit record, profiles) is not on the registry's port,
// where any client reaches it; probes are on both.
func TestAdminSurfacesOnlyOnAdminListener(t *testing.T) {
	t.Parallel()
	up := upstreamtest.New(t)
	n := startNode(t, up)
	n.HandleAdmin("GET /admin/v1/hello", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "hello")
	}))
	for _, tt := range []struct {
		path          string
		main, onAdmin int
	}{
		{"/metrics", 404, 200},
		{"/debug/audit", 404, 200},
		{"/debug/pprof/", 404, 200},
		{"/debug/pprof/cmdline", 404, 200},
		{"/admin/v1/hello", 404, 200},
		{"/healthz", 200, 200},
		{"/readyz", 200, 200},
		{"/v2/", 200, 404},
	} {
		if resp, _ := get(t, http.MethodGet, n.URL+tt.path); resp.StatusCode != tt.main {
			t.Errorf("registry listener GET %s: %d, want %d", tt.path, resp.StatusCode, tt.main)
		}
		if resp, _ := get(t, http.MethodGet, n.AdminURL+tt.path); resp.StatusCode != tt.onAdmin {
			t.Errorf("admin listener GET %s: %d, want %d", tt.path, resp.StatusCode, tt.onAdmin)
		}
	}
}

// TestAdminErrorsAreErrcodeJSON: what the admin listener has no route for
// is answered as OCI errcode JSON, like every other berth error: 404
// NAME_UNKNOWN for a path, 405 UNSUPPORTED (with Allow) for a method.
func TestAdminErrorsAreErrcodeJSON(t *testing.T) {
	t.Parallel()
	n := startNode(t, upstreamtest.New(t))
	for _, tt := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{http.MethodGet, "/nothing/here", 404, "NAME_UNKNOWN", ""},
		{http.MethodGet, "/v2/", 404, "NAME_UNKNOWN", ""},
		{http.MethodPost, "/metrics", 405, "UNSUPPORTED", "GET, HEAD"},
		{http.MethodDelete, "/debug/audit", 405, "UNSUPPORTED", "GET, HEAD"},
	} {
		resp, body := get(t, tt.method, n.AdminURL+tt.path)
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" || errcodeOf(body) != tt.code {
			t.Errorf("%s %s: %d %s %q, want %d %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status, tt.code)
		}
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	// The routes themselves, and ServeMux's redirect to a trailing slash, are unchanged.
	if resp, body := get(t, http.MethodGet, n.AdminURL+"/healthz"); resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, http.MethodGet, n.AdminURL+"/debug/pprof"); resp.StatusCode != 200 || resp.Request.URL.Path != "/debug/pprof/" {
		t.Errorf("GET /debug/pprof: %d at %s, want a redirect to /debug/pprof/", resp.StatusCode, resp.Request.URL.Path)
	}
}

// TestRegistryPortErrorsAreErrcodeJSON: what the registry's port has no
// route for is OCI errcode JSON like the API's own errors (404
// NAME_UNKNOWN, 405 UNSUPPORTED with Allow), and none of it writes a
// byte of the store.
func TestRegistryPortErrorsAreErrcodeJSON(t *testing.T) {
	t.Parallel()
	n := startNode(t, upstreamtest.New(t))
	before := storeFiles(t, n.Store().Root())
	for _, tt := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{http.MethodGet, "/", 404, "NAME_UNKNOWN", ""},
		{http.MethodGet, "/nothing/here", 404, "NAME_UNKNOWN", ""},
		{http.MethodGet, "/metrics", 404, "NAME_UNKNOWN", ""},
		{http.MethodPut, "/blobs/sha256/00", 404, "NAME_UNKNOWN", ""},
		{http.MethodPost, "/upload", 404, "NAME_UNKNOWN", ""},
		{http.MethodPost, "/healthz", 405, "UNSUPPORTED", "GET, HEAD"},
		{http.MethodDelete, "/readyz", 405, "UNSUPPORTED", "GET, HEAD"},
	} {
		req, err := http.NewRequest(tt.method, n.URL+tt.path, strings.NewReader("bytes a client sends"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get("Content-Type") != "application/json" || errcodeOf(body) != tt.code {
			t.Errorf("%s %s: %d %s %q, want %d application/json %s", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Content-Type"), body, tt.status, tt.code)
		}
		if got := resp.Header.Get("Allow"); got != tt.allow {
			t.Errorf("%s %s: Allow %q, want %q", tt.method, tt.path, got, tt.allow)
		}
	}
	if after := storeFiles(t, n.Store().Root()); !slices.Equal(before, after) {
		t.Errorf("the store changed:\nbefore %v\nafter  %v", before, after)
	}
}
