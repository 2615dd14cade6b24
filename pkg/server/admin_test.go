package server_test

import (
	"io"
	"net/http"
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
