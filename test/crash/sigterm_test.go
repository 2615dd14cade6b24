package crash

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

// TestSIGTERMStopsWithinTheGrace: SIGTERM while the upstream holds two
// blobs half way, one with its client still reading and one whose client
// left. berth gives both the shutdown grace, then cuts the response and
// cancels the fills: it exits 0 within the grace and some slack, leaves no
// temp file, stores neither blob, and serves both whole after a restart.
func TestSIGTERMStopsWithinTheGrace(t *testing.T) {
	bin := buildBerth(t)
	up := upstreamtest.New(t)
	dir := t.TempDir()
	const grace = time.Second
	var ds []digest.Digest
	for _, repo := range []string{"term/read", "term/left"} {
		img, err := random.Image(8<<20, 1)
		if err != nil {
			t.Fatal(err)
		}
		up.Push(t, repo, "v1", img)
		layers, _ := img.Layers()
		d, _ := layers[0].Digest()
		ds = append(ds, digest.Digest(d.String()))
	}
	start := func() *proctest.Berth {
		return proctest.RunBerth(t, bin, map[string]any{"cache": map[string]any{"dir": dir}, "shutdownGrace": grace.String()},
			"--registry", up.Host+"=http://"+up.Host, "--default-registry", up.Host, "--log-level", "debug")
	}
	b := start()
	release := up.Gate()
	defer release()
	held := func(repo string, d digest.Digest) *http.Response {
		resp, err := http.Get(b.URL + "/v2/" + repo + "/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
			t.Fatalf("%s: %d: %v", repo, resp.StatusCode, err)
		}
		return resp
	}
	reading := held("term/read", ds[0])
	defer reading.Body.Close()
	held("term/left", ds[1]).Body.Close()

	began := time.Now()
	_ = b.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.Done():
	case <-time.After(grace + 20*time.Second): // slack for a loaded machine
		t.Fatalf("berth still runs %s after SIGTERM with a %s grace\n%s", time.Since(began), grace, b.Tail(4000))
	}
	took := time.Since(began)
	if err := b.Err(); err != nil {
		t.Errorf("berth exited with %v after SIGTERM, want 0\n%s", err, b.Tail(4000))
	}
	if took < grace {
		t.Errorf("berth exited %s after SIGTERM, before its %s grace, with fills under way", took, grace)
	}
	t.Logf("berth exited %s after SIGTERM (grace %s)", took, grace)
	if _, err := io.Copy(io.Discard, reading.Body); err == nil {
		t.Error("the response cut by the grace ended cleanly")
	}
	checkNoTemp(t, dir)
	checkBlobsHash(t, dir)
	checkIndex(t, filepath.Join(dir, "index.db"), dir)
	for _, d := range ds {
		if _, err := os.Stat(filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded())); err == nil {
			t.Errorf("the store holds %s, cut half way", d)
		}
	}

	release()
	b = start()
	for i, repo := range []string{"term/read", "term/left"} {
		resp, err := http.Get(b.URL + "/v2/" + repo + "/blobs/" + ds[i].String())
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || digest.FromBytes(body) != ds[i] {
			t.Errorf("after the restart, %s: %d, %d bytes (%v), want %s", repo, resp.StatusCode, len(body), err, ds[i])
		}
	}
}
