package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// offlineErr returns the first errcode of an error body and its message.
func offlineErr(t *testing.T, body []byte) (string, string) {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("no errcode in %q", body)
	}
	return e.Errors[0].Code, e.Errors[0].Message
}

// An offline node never contacts its upstream, even a reachable one:
// tags resolve from the store whatever their age, a miss says the mirror
// is offline and names the registry and reference.
func TestOfflineServesTheStoreAndNeverAsksUpstream(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(1000, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := up.Push(t, "team/app", "v1", img)
	dir := t.TempDir()
	online := startNode(t, up, func(c *config.Config) { c.Cache.Dir = dir })
	if resp, _ := get(t, http.MethodGet, online.URL+"/v2/team/app/manifests/v1", "Accept", manifestAccept); resp.StatusCode != 200 {
		t.Fatalf("online pull: %d", resp.StatusCode)
	}
	online.Close()

	for _, name := range []string{"offline", "registries[].offline"} {
		t.Run(name, func(t *testing.T) {
			n := startNode(t, up, func(c *config.Config) {
				c.Cache.Dir = dir
				c.TagTTL = config.Duration(time.Millisecond)
				if name == "offline" {
					c.Offline = true
				} else {
					c.Registries[0].Offline = true
				}
			})
			before := up.Total()
			time.Sleep(5 * time.Millisecond) // past the tag TTL
			resp, _ := get(t, http.MethodGet, n.URL+"/v2/team/app/manifests/v1", "Accept", manifestAccept)
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() {
				t.Fatalf("offline tag: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
			}
			resp, body := get(t, http.MethodGet, n.URL+"/v2/team/app/manifests/v2", "Accept", manifestAccept)
			code, msg := offlineErr(t, body)
			if resp.StatusCode != 404 || code != "MANIFEST_UNKNOWN" || !strings.Contains(msg, "offline") || !strings.Contains(msg, up.Host) || !strings.Contains(msg, "team/app/manifests/v2") {
				t.Fatalf("offline miss: %d %s %q", resp.StatusCode, code, msg)
			}
			missing := "sha256:" + strings.Repeat("ab", 32)
			resp, body = get(t, http.MethodGet, n.URL+"/v2/team/app/blobs/"+missing)
			code, msg = offlineErr(t, body)
			if resp.StatusCode != 404 || code != "BLOB_UNKNOWN" || !strings.Contains(msg, "offline") || !strings.Contains(msg, missing) {
				t.Fatalf("offline blob miss: %d %s %q", resp.StatusCode, code, msg)
			}
			if after := up.Total(); after != before {
				t.Fatalf("an offline node sent the upstream %d requests", after-before)
			}
		})
	}
}

// A policy pin serves its tag only as its digest: a tag moved upstream is
// counted and logged, never served.
func TestPolicyPinServesOnlyItsDigest(t *testing.T) {
	up := upstreamtest.New(t)
	first, err := random.Image(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	pinned := up.Push(t, "team/app", "v1", first)
	n := startNode(t, up, func(c *config.Config) {
		c.TagTTL = config.Duration(time.Millisecond)
		c.Pins = map[string]string{up.Host + "/team/app:v1": pinned.String()}
	})
	url := n.URL + "/v2/team/app/manifests/v1"
	if resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept); resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != pinned.String() {
		t.Fatalf("pinned tag: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	second, err := random.Image(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	moved := up.Push(t, "team/app", "v1", second) // the tag moves upstream
	before := scrape(t, n.AdminURL)
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		time.Sleep(5 * time.Millisecond) // past the tag TTL
		resp, _ := get(t, method, url, "Accept", manifestAccept)
		if got := resp.Header.Get("Docker-Content-Digest"); resp.StatusCode != 200 || got != pinned.String() {
			t.Fatalf("%s of a pinned tag moved upstream to %s: %d %s", method, moved, resp.StatusCode, got)
		}
	}
	after := scrape(t, n.AdminURL)
	if got := after.sum("berth_policy_tag_moved_total", lbl("registry", up.Host)) - before.sum("berth_policy_tag_moved_total", lbl("registry", up.Host)); got < 1 {
		t.Fatalf("moves counted: %v", got)
	}
}
