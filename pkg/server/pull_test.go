package server_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// node is one berth node in process in front of up.
type node = nodetest.Node

func startNode(t *testing.T, up *upstreamtest.Registry, mutate ...func(*config.Config)) *node {
	return nodetest.Start(t, up, mutate...)
}

func get(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, body
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

func TestPullImageBytesEqualUpstream(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(1<<20, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := up.Push(t, "team/app", "v1", img)
	n := startNode(t, up)

	resp, _ := get(t, http.MethodHead, n.URL+"/v2/team/app/manifests/v1?ns="+up.Host, "Accept", manifestAccept)
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != want.String() || resp.Header.Get("Content-Length") == "" {
		t.Fatalf("HEAD manifest: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body := get(t, http.MethodGet, n.URL+"/v2/team/app/manifests/v1?ns="+up.Host, "Accept", manifestAccept)
	if resp.StatusCode != 200 || sha(body) != want.String() || resp.Header.Get("Content-Type") != "application/vnd.docker.distribution.manifest.v2+json" {
		t.Fatalf("GET manifest: %d %s %v", resp.StatusCode, sha(body), resp.Header)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		url := n.URL + "/v2/team/app/blobs/" + d.String()
		resp, body := get(t, http.MethodGet, url)
		if resp.StatusCode != 200 || sha(body) != d.String() || resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Content-Encoding") != "" {
			t.Fatalf("GET blob %s: %d %v", d, resp.StatusCode, resp.Header)
		}
		// A hit: HEAD, Range and the same bytes, with no upstream request.
		before := up.BlobGETs("team/app", d.String())
		resp, _ = get(t, http.MethodHead, url)
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) {
			t.Fatalf("HEAD blob: %d %d", resp.StatusCode, resp.ContentLength)
		}
		resp, part := get(t, http.MethodGet, url, "Range", "bytes=100-199")
		if resp.StatusCode != 206 || !bytes.Equal(part, body[100:200]) {
			t.Fatalf("Range: %d", resp.StatusCode)
		}
		resp, _ = get(t, http.MethodGet, url, "Range", fmt.Sprintf("bytes=%d-", len(body)+10))
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("Range past the end: %d", resp.StatusCode)
		}
		if after := up.BlobGETs("team/app", d.String()); after != before {
			t.Fatalf("hit went upstream: %d → %d", before, after)
		}
	}
}

func TestConcurrentColdClientsCauseOneUpstreamFetch(t *testing.T) {
	up := upstreamtest.New(t)
	layer, d, _ := up.PushLayer(t, "big/blob", 64<<20)
	n := startNode(t, up)
	url := n.URL + "/v2/big/blob/blobs/" + d.String()

	release := up.Gate() // the upstream stops half way until released
	t.Cleanup(release)
	const clients = 32
	var wg sync.WaitGroup
	firstBytes := make(chan struct{}, clients)
	errs := make(chan error, clients)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			buf := make([]byte, 64<<10)
			k, err := io.ReadAtLeast(resp.Body, buf, 1)
			if err != nil {
				errs <- err
				return
			}
			h.Write(buf[:k])
			firstBytes <- struct{}{}
			if _, err := io.Copy(h, resp.Body); err != nil {
				errs <- err
				return
			}
			if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
				errs <- fmt.Errorf("got %s", got)
			}
		}()
	}
	for range clients { // every client streams while the fetch is half done
		select {
		case <-firstBytes:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("a client had no byte before the upstream finished")
		}
	}
	// A client joining mid-download with a Range inside the written part.
	resp, err := http.DefaultClient.Do(mustReq(t, url, "Range", "bytes=1000-1999"))
	if err != nil {
		t.Fatal(err)
	}
	part, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 206 || len(part) != 1000 {
		t.Fatalf("range inside the in-flight blob: %d, %d bytes, %v", resp.StatusCode, len(part), err)
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	full, _ := io.ReadAll(mustOpen(t, layer))
	if !bytes.Equal(part, full[1000:2000]) {
		t.Fatal("range bytes differ from the blob's")
	}
	if got := up.BlobGETs("big/blob", d.String()); got != 1 {
		t.Fatalf("upstream saw %d blob GETs, want 1", got)
	}
}

func mustReq(t *testing.T, url string, hdr ...string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return req
}

func mustOpen(t *testing.T, l interface{ Compressed() (io.ReadCloser, error) }) io.Reader {
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	return rc
}

func TestWrongUpstreamBytesAreNeverStoredNorServedWhole(t *testing.T) {
	up := upstreamtest.New(t)
	img, _ := random.Image(2<<20, 1)
	up.Push(t, "bad/bytes", "v1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	n := startNode(t, up)
	up.SetCorrupt(true)
	url := n.URL + "/v2/bad/bytes/blobs/" + d.String()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(url)
			if err != nil {
				return // refused outright: fine
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode == 200 {
				t.Errorf("client got a clean %d-byte body of a blob that fails its digest (%s)", len(body), sha(body))
			}
			if int64(len(body)) == size && sha(body) != d.String() && err == nil {
				t.Errorf("wrong bytes served whole")
			}
		}()
	}
	wg.Wait()
	if n.Store().Has(digest.Digest(d.String())) {
		t.Fatal("wrong bytes were stored")
	}
	// The next request after the upstream heals fetches and serves it right.
	up.SetCorrupt(false)
	resp, body := get(t, http.MethodGet, url)
	if resp.StatusCode != 200 || sha(body) != d.String() {
		t.Fatalf("after heal: %d %s", resp.StatusCode, sha(body))
	}
}

func TestOutageServesCachedTagAndTTLSavesRequests(t *testing.T) {
	up := upstreamtest.New(t)
	img, _ := random.Image(1<<10, 2)
	want := up.Push(t, "lib/app", "stable", img)
	short := startNode(t, up, func(c *config.Config) { c.TagTTL = config.Duration(time.Millisecond) })
	long := startNode(t, up, func(c *config.Config) { c.TagTTL = config.Duration(time.Hour) })
	pull := func(n *node) {
		t.Helper()
		resp, body := get(t, http.MethodGet, n.URL+"/v2/lib/app/manifests/stable", "Accept", manifestAccept)
		if resp.StatusCode != 200 || sha(body) != want.String() {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		var m struct{ Layers []struct{ Digest string } }
		json.Unmarshal(body, &m)
		for _, l := range m.Layers {
			resp, b := get(t, http.MethodGet, n.URL+"/v2/lib/app/blobs/"+l.Digest)
			if resp.StatusCode != 200 || sha(b) != l.Digest {
				t.Fatalf("blob %s: %d", l.Digest, resp.StatusCode)
			}
		}
	}
	pull(short)
	pull(long)
	// Within the TTL, a tag request makes no upstream request at all.
	before := up.Total()
	for range 5 {
		pull(long)
		get(t, http.MethodHead, long.URL+"/v2/lib/app/manifests/stable", "Accept", manifestAccept)
	}
	if after := up.Total(); after != before {
		t.Fatalf("within the TTL the upstream saw %d requests", after-before)
	}
	// After the TTL, revalidation is one HEAD, no GET.
	time.Sleep(5 * time.Millisecond) // let the 1ms TTL pass
	before = up.Total()
	pull(short)
	if got := up.Count(http.MethodHead, "/v2/lib/app/manifests/stable"); got < 1 || up.Total()-before != 1 {
		t.Fatalf("revalidation: %d HEADs, %d requests", got, up.Total()-before)
	}
	// Upstream gone: the cached tag still resolves and the image pulls.
	up.SetDown(true)
	time.Sleep(5 * time.Millisecond)
	pull(short)
	resp, _ := get(t, http.MethodGet, short.URL+"/v2/lib/app/manifests/other", "Accept", manifestAccept)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("unknown tag during outage: %d, want 503", resp.StatusCode)
	}
}

func TestErrorsAreOCIJSONAndChangeNothing(t *testing.T) {
	up := upstreamtest.New(t)
	n := startNode(t, up)
	before := storeFiles(t, n.Store().Root())
	defer func() {
		if after := storeFiles(t, n.Store().Root()); !slices.Equal(before, after) {
			t.Errorf("bad requests changed the store: %v → %v", before, after)
		}
	}()
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/Bad_Name/manifests/v1", 400, "NAME_INVALID"},
		{"GET", "/v2/ok/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
		{"GET", "/v2/ok/manifests/missing", 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/ok/blobs/sha256:" + strings.Repeat("a", 64), 404, "BLOB_UNKNOWN"},
		{"PUT", "/v2/ok/manifests/v1", 405, "UNSUPPORTED"},
		{"POST", "/v2/ok/blobs/uploads/", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/ok/blobs/sha256:" + strings.Repeat("a", 64), 405, "UNSUPPORTED"},
		{"GET", "/v2/ok/manifests/v1?ns=evil.example", 403, "DENIED"},
	} {
		t.Run(c.method+c.path, func(t *testing.T) {
			resp, body := get(t, c.method, n.URL+c.path)
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if resp.StatusCode != c.status || json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 || e.Errors[0].Code != c.code {
				t.Fatalf("%d %s, want %d %s", resp.StatusCode, body, c.status, c.code)
			}
		})
	}
	resp, _ := get(t, "GET", n.URL+"/v2/")
	if resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Fatalf("/v2/: %d %v", resp.StatusCode, resp.Header)
	}
}

// storeFiles lists the content files of a store (index.db aside).
func storeFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	for _, dir := range []string{"blobs", "tmp"} {
		filepath.WalkDir(filepath.Join(root, dir), func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				files = append(files, p)
			}
			return nil
		})
	}
	return files
}
