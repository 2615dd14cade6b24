package server_test

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
	bolt "go.etcd.io/bbolt"
)

// A crash between link and index leaves a manifest file the index does not
// know: the test removes the manifest's index entry, as the crash would
// have left it. After a restart the manifest is served with its media
// type, never an empty Content-Type.
func TestManifestIndexedAfterACrashKeepsItsContentType(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := up.Push(t, "team/app", "v1", img)
	mt, _ := img.MediaType()
	dir := t.TempDir()
	first := startNode(t, up, func(c *config.Config) { c.Cache.Dir = dir })
	if resp, _ := get(t, http.MethodGet, first.URL+"/v2/team/app/manifests/v1", "Accept", manifestAccept); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != string(mt) {
		t.Fatalf("first pull: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first.Close()
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("blobs")).Delete([]byte(d.String())) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	up.SetDown(true) // the answer must come from the store
	n := startNode(t, up, func(c *config.Config) { c.Cache.Dir = dir })
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		resp, _ := get(t, method, n.URL+"/v2/team/app/manifests/"+d.String(), "Accept", manifestAccept)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != string(mt) {
			t.Fatalf("%s after the restart: %d, Content-Type %q, want %q", method, resp.StatusCode, resp.Header.Get("Content-Type"), mt)
		}
	}
}
