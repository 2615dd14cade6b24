package e2e

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestConcurrentColdPull: three containerd daemons and a Range client
// ask berth for one cold 24 MiB layer at once while the upstream stalls
// it after its first MiB. The upstream is released only once every
// client has had body bytes from berth, so each of them joined the
// download in flight and was streamed before it finished (else the
// stall times out and the test fails). The upstream serves the layer
// once.
func TestConcurrentColdPull(t *testing.T) {
	t.Parallel()
	needBerth(t)
	needRoot(t)
	const daemons = 3
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	img := randomImage(t, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, runtime.GOARCH, 24<<20)
	if err := remote.Write(ref(t, reg, "e2e/big", "v1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	want := testImage{Repo: "e2e/big", Tag: "v1", Digest: d.String(), Blobs: imageBlobs(t, img)}
	layers, _ := img.Layers()
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	layerBytes, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	big := want.Blobs[1]

	b := startBerth(t, berthOpts{Registries: map[string]string{up.Addr: "http://" + up.Addr}, Default: up.Addr})
	front := newCountingProxy(t, b.Addr) // between the clients and berth
	release := make(chan struct{})
	var (
		mu       sync.Mutex
		streamed int
	)
	front.OnFirstByte(big, func() {
		mu.Lock()
		defer mu.Unlock()
		if streamed++; streamed == daemons+1 {
			close(release)
		}
	})
	up.Hold(big, 1<<20, release)

	var wg sync.WaitGroup
	for i := range daemons {
		c := startContainerd(t)
		c.mirror(t, up.Addr, front.Addr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(fmt.Sprint("containerd", i), func(t *testing.T) { c.pull(t, up.Addr+"/e2e/big:v1", want) })
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.Run("range", func(t *testing.T) { rangeInFlight(t, front.Addr, big, layerBytes) })
	}()
	wg.Wait()

	select {
	case <-release:
	default:
		mu.Lock()
		defer mu.Unlock()
		t.Errorf("the upstream stall timed out: berth streamed the in-flight layer to %d of %d clients before its fetch finished", streamed, daemons+1)
	}
	assertBlobsOnce(t, want.Blobs, up)
}

// rangeInFlight GETs bytes 100000-199999 of a blob (inside the part
// already fetched) and checks the 206 answer.
func rangeInFlight(t *testing.T, addr, d string, blob []byte) {
	req, err := http.NewRequest("GET", "http://"+addr+"/v2/e2e/big/blobs/"+d, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=100000-199999")
	resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("range body: %v", err)
	}
	wantRange := fmt.Sprintf("bytes 100000-199999/%d", len(blob))
	if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != wantRange {
		t.Errorf("Range GET: %s, Content-Range %q; want 206, %q", resp.Status, resp.Header.Get("Content-Range"), wantRange)
	}
	if digestOf(body) != digestOf(blob[100000:200000]) {
		t.Errorf("Range GET: %d bytes, not the blob's bytes 100000-199999", len(body))
	}
}
