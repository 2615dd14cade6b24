package upstream

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
)

// Health shows each endpoint's circuit breaker: the refused one and the
// 503 one failing with their errors and back-off end, the good one ok
// with its last success; the registry degraded, then down when only
// failing endpoints are left; a registry never asked "unused".
func TestHealthPerRegistryAndEndpoint(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusServiceUnavailable, "UNAVAILABLE", "maintenance")
	}))
	t.Cleanup(down.Close)

	backoff := config.Duration(time.Hour)
	c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{refused, down.URL, up.front.URL}, FailBackoff: backoff})
	if h := c.Health(); len(h) != 1 || h[0].State != StateUnused || h[0].Endpoints[2].State != StateUnused {
		t.Fatalf("before any request: %+v", h)
	}
	before := time.Now()
	if _, _, err := c.GetManifest(testCtx(t), repoOf(c, "team/app").Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	h := c.Health()
	if len(h) != 1 || h[0].Name != "example.test" || h[0].State != StateDegraded || h[0].Backoff != "1h0m0s" || len(h[0].Endpoints) != 3 {
		t.Fatalf("health %+v", h)
	}
	for i, want := range []string{"connection refused", "503", ""} {
		e := h[0].Endpoints[i]
		if want == "" {
			if e.State != StateOK || e.LastSuccess.Before(before) || e.LastError != "" || e.Failures != 0 || !e.RetryAt.IsZero() {
				t.Errorf("good endpoint %+v", e)
			}
			continue
		}
		if e.State != StateFailing || !strings.Contains(e.LastError, want) || e.LastErrorAt.Before(before) || e.Failures != 1 ||
			e.RetryAt.Before(before.Add(59*time.Minute)) || !e.LastSuccess.IsZero() {
			t.Errorf("endpoint %d: %+v, want failing with %q", i, e, want)
		}
	}
	if h[0].Endpoints[1].URL != down.URL {
		t.Errorf("endpoint URL %q, want %q", h[0].Endpoints[1].URL, down.URL)
	}

	// Only the failing endpoints: down once both have failed.
	all := newClient(t, config.Registry{Name: "b.test", Endpoints: []string{refused, down.URL}, FailBackoff: backoff})
	all.HeadManifest(testCtx(t), repoOf(all, "team/app").Manifest("v1"))
	if h := all.Health(); h[0].State != StateDown {
		t.Errorf("every endpoint failing: %+v", h)
	}
}

// An endpoint URL with credentials in it shows none.
func TestHealthURLHasNoCredentials(t *testing.T) {
	t.Parallel()
	c := newClient(t, config.Registry{Name: "c.test", Endpoints: []string{"https://user:secret@registry.example:5000/mirror"}})
	if u := c.Health()[0].Endpoints[0].URL; strings.Contains(u, "secret") || u != "https://registry.example:5000/mirror" {
		t.Errorf("URL %q", u)
	}
}
