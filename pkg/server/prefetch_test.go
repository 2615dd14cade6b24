package server_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"go.uber.org/goleak"
)

// A client's cold manifest GET makes the node fetch the image's config and
// layers from the real upstream at once, one GET each, before the client
// asks; the client's blob GETs then add none and get the right bytes. With
// prefetch off, no blob is fetched until asked. Goroutines return to
// baseline once the node and the upstream are stopped.
func TestPrefetchThroughTheNode(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		t.Run(fmt.Sprintf("enabled=%v", enabled), func(t *testing.T) {
			t.Cleanup(func() { // registered first: runs after the node and the upstream stopped
				goleak.VerifyNone(t, goleak.IgnoreCurrent(),
					goleak.IgnoreTopFunction("github.com/docker/go-events.(*Broadcaster).run"))
			})
			up := upstreamtest.New(t)
			n := startNode(t, up, func(c *config.Config) { c.Prefetch.Enabled = enabled })
			img, err := random.Image(48<<10, 4)
			if err != nil {
				t.Fatal(err)
			}
			up.Push(t, "team/app", "v1", img)
			cfgName, _ := img.ConfigName()
			blobs := []string{cfgName.String()}
			layers, _ := img.Layers()
			for _, l := range layers {
				h, _ := l.Digest()
				blobs = append(blobs, h.String())
			}
			gets := func() (total int, each []int) {
				for _, d := range blobs {
					c := up.BlobGETs("team/app", d)
					total += c
					each = append(each, c)
				}
				return total, each
			}

			resp, _ := get(t, "GET", n.URL+"/v2/team/app/manifests/v1", "Accept", manifestAccept)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("manifest: %d", resp.StatusCode)
			}
			if enabled {
				// Wait (bounded) for the prefetch to count every blob: the
				// client has asked for none of them.
				key := `berth_prefetch_blobs_total{result="fetched"}`
				deadline := time.Now().Add(60 * time.Second)
				for scrapeOnce(t, n.AdminURL)[key] < float64(len(blobs)) {
					if time.Now().After(deadline) {
						_, each := gets()
						t.Fatalf("prefetch did not fetch the %d blobs in time; upstream blob GETs %v", len(blobs), each)
					}
					time.Sleep(20 * time.Millisecond) // polling: the prefetch runs in the node, behind the API
				}
				if total, each := gets(); total != len(blobs) {
					t.Fatalf("after the cold manifest alone, upstream blob GETs %v, want one each", each)
				}
			} else if total, each := gets(); total != 0 {
				t.Fatalf("prefetch off: upstream blob GETs %v before the client asked", each)
			}
			for _, d := range blobs {
				resp, body := get(t, "GET", n.URL+"/v2/team/app/blobs/"+d)
				if resp.StatusCode != http.StatusOK || sha(body) != d {
					t.Fatalf("blob %s: %d, got %s", d, resp.StatusCode, sha(body))
				}
			}
			if total, each := gets(); total != len(blobs) {
				t.Fatalf("after the client's blob GETs, upstream blob GETs %v, want one each", each)
			}
			s := scrapeOnce(t, n.AdminURL)
			if got := s[`berth_prefetch_blobs_total{result="fetched"}`]; enabled != (got == float64(len(blobs))) || (!enabled && got != 0) {
				t.Fatalf("berth_prefetch_blobs_total{fetched} = %v (enabled %v)", got, enabled)
			}
		})
	}
}
