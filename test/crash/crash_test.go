// Package crash kills a berth process with SIGKILL at random points while
// clients pull through it from a real upstream, restarts it, and checks
// that the store holds only verified, complete content and serves again.
package crash

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

const rounds = 20

type image struct {
	repo, tag string
	blobs     map[digest.Digest]int64 // config and layers with sizes
}

func TestKillDuringPullsLeavesAVerifiedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds berth and runs it 20 times")
	}
	bin := buildBerth(t)
	up := upstreamtest.New(t)
	dir := t.TempDir()
	var images []image
	midFill := 0
	for round := range rounds {
		// Fresh images each round, so the kill lands during fills.
		fresh := []image{pushImage(t, up, fmt.Sprintf("crash/r%d-a", round)), pushImage(t, up, fmt.Sprintf("crash/r%d-b", round))}
		b := startBerth(t, bin, dir, up.Host)
		checkIndexCopy(t, dir) // after the restart's reconcile
		checkNoTemp(t, dir)
		if len(images) > 0 { // what was pulled before pulls again, whole
			if err := pull(t.Context(), b.URL, up.Host, images[len(images)-1]); err != nil {
				t.Fatalf("round %d: pull after restart: %v\n%s", round, err, b.logTail())
			}
		}
		images = append(images, fresh...)
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pull(ctx, b.URL, up.Host, fresh[i%2]) // fails when killed: expected
			}()
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond) // the random kill point
		b.kill(t)
		cancel()
		wg.Wait()
		if entries, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(entries) > 0 {
			midFill++
		}
		checkBlobsHash(t, dir)
	}
	t.Logf("%d of %d kills landed during a fill (temp files left)", midFill, rounds)
	b := startBerth(t, bin, dir, up.Host)
	for _, img := range images {
		if err := pull(t.Context(), b.URL, up.Host, img); err != nil {
			t.Fatalf("final pull of %s: %v\n%s", img.repo, err, b.logTail())
		}
	}
	b.stop(t)
	checkBlobsHash(t, dir)
	checkIndex(t, filepath.Join(dir, "index.db"), dir)
	checkNoTemp(t, dir)
}

func buildBerth(t *testing.T) string {
	t.Helper()
	bin, err := proctest.BuildBerth(t.Context(), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func pushImage(t *testing.T, up *upstreamtest.Registry, repo string) image {
	t.Helper()
	img, err := random.Image(700<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, repo, "v1", img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	im := image{repo: repo, tag: "v1", blobs: map[digest.Digest]int64{}}
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		im.blobs[digest.Digest(d.Digest.String())] = d.Size
	}
	return im
}

type berth struct{ *proctest.Berth }

func (b *berth) logTail() string { return b.Tail(4000) }

// startBerth runs berth on dir with a 6 MiB quota, so eviction runs too,
// and waits until it is ready.
func startBerth(t *testing.T, bin, dir, upstream string) *berth {
	t.Helper()
	return &berth{proctest.RunBerth(t, bin, map[string]any{"cache": map[string]any{"dir": dir}},
		"--registry", upstream+"=http://"+upstream, "--default-registry", upstream,
		"--cache-max-size", "6MiB", "--log-level", "debug")}
}

func (b *berth) kill(t *testing.T) {
	b.signal(t, syscall.SIGKILL, 10*time.Second, "berth outlived SIGKILL")
}

func (b *berth) stop(t *testing.T) {
	b.signal(t, syscall.SIGTERM, 30*time.Second, "berth did not stop on SIGTERM")
}

// signal sends sig to berth and fails t unless it exits within.
func (b *berth) signal(t *testing.T, sig syscall.Signal, within time.Duration, fail string) {
	t.Helper()
	_ = b.Cmd.Process.Signal(sig)
	select {
	case <-b.Done():
	case <-time.After(within):
		t.Fatal(fail)
	}
}

// pull fetches the image's manifest by tag and every blob, checking each
// blob's bytes against its digest and size.
func pull(ctx context.Context, base, registry string, img image) error {
	get := func(path string) ([]byte, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v2/"+img.repo+path+"?ns="+registry, nil)
		req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	if _, err := get("/manifests/" + img.tag); err != nil {
		return err
	}
	for d, size := range img.blobs {
		data, err := get("/blobs/" + d.String())
		if err != nil {
			return err
		}
		if int64(len(data)) != size || digest.FromBytes(data) != d {
			return fmt.Errorf("blob %s: %d bytes that do not match", d, len(data))
		}
	}
	return nil
}

// checkBlobsHash: every file under blobs/ hashes to its name.
func checkBlobsHash(t *testing.T, dir string) {
	t.Helper()
	root := filepath.Join(dir, "blobs")
	if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
		return // killed before the store was first opened: nothing is stored
	}
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if got := digest.FromBytes(data).Encoded(); got != e.Name() {
			return fmt.Errorf("%s holds bytes of %s", path, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("tmp/: %d entries, %v", len(entries), err)
	}
}

// checkIndexCopy checks a copy of the index a running, idle berth holds
// locked: it has just reconciled and written nothing since.
func checkIndexCopy(t *testing.T, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "index.db"))
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "index.db")
	if err := os.WriteFile(cp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	checkIndex(t, cp, dir)
}

// checkIndex: every index entry has its file, of the indexed size.
func checkIndex(t *testing.T, path, dir string) {
	t.Helper()
	db, err := bolt.Open(path, 0o644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("blobs"))
		if b == nil {
			return errors.New("no blobs bucket")
		}
		return b.ForEach(func(k, v []byte) error {
			d := digest.Digest(k)
			var info struct{ Size int64 }
			if err := json.Unmarshal(v, &info); err != nil {
				return fmt.Errorf("entry %s: %w", d, err)
			}
			fi, err := os.Stat(filepath.Join(dir, "blobs", "sha256", d.Encoded()[:2], d.Encoded()))
			if err != nil {
				return fmt.Errorf("entry without its file: %w", err)
			}
			if fi.Size() != info.Size {
				return fmt.Errorf("entry %s: size %d, file %d", d, info.Size, fi.Size())
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
