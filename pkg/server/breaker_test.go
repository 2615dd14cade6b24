package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// A silent upstream (it accepts requests and never answers, as one that
// drops packets) costs one timeout; after that its endpoint is open and
// expired tags answer from the cache at once, blobs fail at once.
func TestSilentUpstreamCostsOneTimeoutThenStaleTagsAnswerAtOnce(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := up.Push(t, "team/app", "v1", img)
	const timeout = 3 * time.Second
	n := startNode(t, up, func(c *config.Config) {
		c.TagTTL = config.Duration(time.Millisecond)
		c.Registries[0].Timeouts.ResponseHeader = config.Duration(timeout)
		c.Registries[0].FailBackoff = config.Duration(time.Hour) // no probe during the test
		c.Prefetch.Enabled = false                               // a prefetch still running when the upstream goes silent would be a second held request
	})
	url := n.URL + "/v2/team/app/manifests/v1"
	if resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept); resp.StatusCode != 200 {
		t.Fatalf("manifest: %d", resp.StatusCode)
	}
	up.SetSilent(true)
	time.Sleep(5 * time.Millisecond) // let the 1ms TTL pass

	start := time.Now()
	resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() {
		t.Fatalf("stale manifest after the timeout: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("first request took %s: it did not wait for the upstream", took)
	}
	// Asking the silent endpoint again would hold a request at the upstream
	// (and cost the timeout): count the held requests after each answer.
	for i := range 5 {
		time.Sleep(5 * time.Millisecond) // the tag is expired again each time
		start := time.Now()
		resp, _ := get(t, http.MethodGet, url, "Accept", manifestAccept)
		took := time.Since(start)
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() {
			t.Fatalf("stale manifest %d: %d", i, resp.StatusCode)
		}
		if h := up.Held(); h != 1 || took >= timeout {
			t.Fatalf("stale manifest %d took %s, the silent upstream holds %d requests: it was asked again\n%s", i, took, h, requestsSeen(up))
		}
	}
	// A blob the store lacks fails at once, with an errcode.
	start = time.Now()
	resp, body := get(t, http.MethodGet, n.URL+"/v2/team/app/blobs/sha256:"+"0000000000000000000000000000000000000000000000000000000000000001"[:64])
	took := time.Since(start)
	if resp.StatusCode/100 == 2 || errcodeOf(body) == "" {
		t.Fatalf("blob from an open endpoint: %d: %s", resp.StatusCode, body)
	}
	if h := up.Held(); h != 1 || took >= timeout {
		t.Fatalf("blob from an open endpoint took %s, the silent upstream holds %d requests, want 1\n%s", took, h, requestsSeen(up))
	}
}

// requestsSeen lists the requests the upstream saw, for a failure message.
func requestsSeen(up *upstreamtest.Registry) string {
	var b strings.Builder
	for _, r := range up.Requests() {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}
