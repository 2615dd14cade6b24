package e2e

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// containerd2Config is containerd 2.x's config (test/proctest): the
// transfer service fetching one layer as parallel 8 MiB Range requests.
var containerd2Config = proctest.Containerd2Config

// containerd2Tool returns a binary of the containerd 2.x that
// test/tools.sh builds into <tools>/containerd2/bin.
func containerd2Tool(t testing.TB, name string) string {
	t.Helper()
	dirs := []string{filepath.Join(repoRoot, ".tools", "containerd2", "bin")}
	if d := os.Getenv("BERTH_TOOLS"); d != "" {
		dirs = append([]string{filepath.Join(d, "containerd2", "bin")}, dirs...)
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, name)); err == nil && st.Mode()&0o111 != 0 {
			return filepath.Join(d, name)
		}
	}
	missing(t, "containerd 2.x %s not found in %s (run test/tools.sh)", name, strings.Join(dirs, ", "))
	return ""
}

// TestContainerd2RangePull: containerd 2.x fetches a 20 MiB layer as
// parallel open-ended Range requests (bytes=0-, 8388608-, ...), each read
// about 8 MiB and then dropped, while berth is still filling it. Berth
// answers 206 from the in-flight blob; the upstream serves it once; a
// second containerd 2.x does the same against the cached blob.
func TestContainerd2RangePull(t *testing.T) {
	t.Parallel()
	needBerth(t)
	needRoot(t)
	bin, ctr := containerd2Tool(t, "containerd"), containerd2Tool(t, "ctr")
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	img := randomImage(t, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, runtime.GOARCH, 20<<20, 1<<20)
	if err := remote.Write(ref(t, reg, "e2e/ranges", "v1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	want := testImage{Repo: "e2e/ranges", Tag: "v1", Digest: d.String(), Blobs: imageBlobs(t, img)}
	b := startBerth(t, berthOpts{Registries: map[string]string{up.Addr: "http://" + up.Addr}, Default: up.Addr})
	front := newCountingProxy(t, b.Addr) // logs what containerd asks berth

	for _, round := range []string{"cold", "cached"} {
		t.Run(round, func(t *testing.T) {
			c := startContainerdBin(t, bin, ctr, containerd2Config)
			c.mirror(t, up.Addr, front.Addr)
			c.pull(t, up.Addr+"/e2e/ranges:v1", want)
		})
	}
	assertBlobsOnce(t, want.Blobs, up)
	big := want.Blobs[1]
	ranged := 0
	for _, l := range strings.Split(front.Log(), "\n") {
		if strings.Contains(l, "GET ") && strings.Contains(l, big) && strings.Contains(l, "-> 206") && strings.Contains(l, "Range: bytes=") {
			ranged++
		}
	}
	if ranged < 4 { // at least two ranges of the 20 MiB layer per pull
		t.Errorf("containerd 2.x made %d Range GETs of the big layer answered 206, want >= 4:\n%s", ranged, front.Log())
	}
}
