package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// TestSneakerNet carries images into a site that has no upstream, with
// real processes end to end. Site A (online, a distribution registry
// upstream) preloads a list file with a multi-arch image and a signed
// image (an oras attach signature under the referrers tag schema, and a
// cosign-style sha256-<hex>.sig tag) straight into its cache directory,
// then exports it as a tar. The upstream is stopped. Site B (its upstream
// a dead loopback port, and --offline) imports the tar through its admin API while it
// serves; containerd pulls by tag and by digest through site B's
// hosts.toml, skopeo copies the image straight out of the tar
// (oci-archive:), and the digests are the upstream's. A tampered tar is
// refused naming the digest, with nothing stored.
func TestSneakerNet(t *testing.T) {
	t.Parallel()
	bin := needBerth(t)
	upAddr, upProc := startRegistryProc(t, "", 200)
	multi := pushIndex(t, upAddr, "site/multi", "v1")
	app := pushImage(t, upAddr, "site/app", "v1", false)

	dir := t.TempDir()
	// The signature, as oras writes it to a registry without a referrers
	// API: an artifact whose subject is the image, listed in the
	// sha256-<hex> tag's index.
	sigFile := filepath.Join(dir, "signature.txt")
	os.WriteFile(sigFile, []byte("signed by the site's key\n"), 0o644)
	oras := tool(t, "oras")
	out := mustRun(t, 2*time.Minute, []string{"HOME=" + dir}, oras, "attach", "--plain-http", "--disable-path-validation",
		"--artifact-type", "application/vnd.berth.e2e.signature", upAddr+"/site/app@"+app.Digest, sigFile+":text/plain")
	m := regexp.MustCompile(`Digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("oras attach printed no digest:\n%s", out)
	}
	orasSig := m[1]
	// And a cosign-style signature under sha256-<hex>.sig.
	cosignTag := "sha256-" + strings.TrimPrefix(app.Digest, "sha256:") + ".sig"
	sig, err := random.Image(1<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	sig = mutate.MediaType(sig, types.OCIManifestSchema1)
	if err := remote.Write(ref(t, upAddr, "site/app", cosignTag), sig); err != nil {
		t.Fatal(err)
	}
	sd, _ := sig.Digest()
	cosignSig := sd.String()

	// Site A: preload the list into its store, export it.
	cfgA := filepath.Join(dir, "a.yaml")
	os.WriteFile(cfgA, []byte(fmt.Sprintf("defaultRegistry: %q\nregistries:\n  - name: %q\n    endpoints: [\"http://%s\"]\n", upAddr, upAddr, upAddr)), 0o644)
	list := filepath.Join(dir, "images.txt")
	os.WriteFile(list, []byte("# the site's images\n"+upAddr+"/site/multi:v1\n"+upAddr+"/site/app:v1  # signed\n"), 0o644)
	storeA := filepath.Join(dir, "a")
	out = mustRun(t, 3*time.Minute, nil, bin, "preload", "--config", cfgA, "--cache-dir", storeA, "-f", list)
	if !strings.Contains(out, "preloaded 2 images") || !strings.Contains(out, "2 referrers") {
		t.Fatalf("preload:\n%s", out)
	}
	archive := filepath.Join(dir, "site.tar")
	out = mustRun(t, 3*time.Minute, nil, bin, "export", "--config", cfgA, "--cache-dir", storeA, "-f", list, "-o", archive)
	if !strings.Contains(out, "exported 2 images") {
		t.Fatalf("export:\n%s", out)
	}
	layoutDir := filepath.Join(dir, "layout")
	mustRun(t, 3*time.Minute, nil, bin, "export", "--config", cfgA, "--cache-dir", storeA, "-o", layoutDir, upAddr+"/site/multi:v1")
	upProc.Stop(10 * time.Second) // nothing below may reach the upstream

	// oras reads both layouts by the full name; crane pushes the directory
	// to another registry as the same index, byte for byte.
	for _, layout := range []string{archive, layoutDir} {
		for name, want := range map[string]string{"site/app:v1": app.Digest, "site/multi:v1": multi.Digest} {
			if layout == layoutDir && name == "site/app:v1" {
				continue
			}
			got := mustRun(t, time.Minute, []string{"HOME=" + dir}, oras, "manifest", "fetch", "--oci-layout-path", layout, upAddr+"/"+name)
			if d := digestOf([]byte(got)); d != want {
				t.Errorf("oras manifest fetch %s from %s: %s, want %s", name, filepath.Base(layout), d, want)
			}
		}
	}
	sink := startRegistry(t, "", 200)
	crane := tool(t, "crane")
	mustRun(t, 2*time.Minute, []string{"HOME=" + dir}, crane, "push", "--insecure", layoutDir, sink+"/copied/multi:v1")
	if d := strings.TrimSpace(mustRun(t, time.Minute, []string{"HOME=" + dir}, crane, "digest", "--insecure", sink+"/copied/multi:v1")); d != multi.Digest {
		t.Errorf("crane push of the exported layout: %s, want %s", d, multi.Digest)
	}

	// A tampered copy is refused, naming the layer, and stores nothing.
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	layer := app.Blobs[len(app.Blobs)-1] // the 4 MiB layer
	i := bytes.Index(data, []byte("blobs/sha256/"+strings.TrimPrefix(layer, "sha256:")))
	if i < 0 {
		t.Fatalf("%s not in the archive", layer)
	}
	bad := bytes.Clone(data)
	bad[i+(2<<20)] ^= 0x01
	badFile := filepath.Join(dir, "tampered.tar")
	os.WriteFile(badFile, bad, 0o644)
	storeC := filepath.Join(dir, "c")
	out, err = run(t, 2*time.Minute, nil, bin, "import", "--cache-dir", storeC, badFile)
	if err == nil || !strings.Contains(out, layer) {
		t.Fatalf("tampered import: %v\n%s", err, out)
	}
	if n := countFiles(t, filepath.Join(storeC, "blobs")) + countFiles(t, filepath.Join(storeC, "tmp")); n != 0 {
		t.Errorf("tampered import left %d files in the store", n)
	}

	// Site B: serving offline, its upstream a dead port besides; import
	// through its admin API.
	b := startBerth(t, berthOpts{Registries: map[string]string{upAddr: "http://" + deadAddr(t)}, Default: upAddr, Extra: []string{"--offline"}})
	out = mustRun(t, 3*time.Minute, nil, bin, "import", "--addr", "http://"+b.Admin, archive)
	for _, want := range []string{"tagged " + upAddr + "/site/multi:v1", "tagged " + upAddr + "/site/app:v1", "tagged " + upAddr + "/site/app:" + cosignTag} {
		if !strings.Contains(out, want) {
			t.Errorf("import: no %q in:\n%s", want, out)
		}
	}

	c := startContainerd(t)
	c.mirror(t, upAddr, b.Addr)
	c.pull(t, upAddr+"/site/multi:v1", multi)
	c.pull(t, upAddr+"/site/app:v1", app)
	byDigest := upAddr + "/site/multi@" + multi.Digest
	c.ctr(t, "images", "pull", "--hosts-dir", c.hosts, byDigest)
	if ls := c.ctr(t, "images", "ls", "-q"); !hasLine(ls, byDigest) {
		t.Errorf("ctr images ls: no %s:\n%s", byDigest, ls)
	}

	// The signatures came along: site B answers both tag schemas from its store.
	tagIndex := getManifest(t, b.Addr, upAddr, "site/app", "sha256-"+strings.TrimPrefix(app.Digest, "sha256:"))
	if !strings.Contains(tagIndex, orasSig) {
		t.Errorf("referrers tag index at site B lacks the oras signature %s:\n%s", orasSig, tagIndex)
	}
	getManifest(t, b.Addr, upAddr, "site/app", orasSig)
	// And oras finds the signature through the referrers API, which site B
	// answers from its store since its upstream is unreachable.
	disc := mustRun(t, time.Minute, []string{"HOME=" + dir}, oras, "discover", "--plain-http", "--format", "json", b.Addr+"/site/app@"+app.Digest)
	if !strings.Contains(disc, orasSig) {
		t.Errorf("oras discover at site B: no %s in:\n%s", orasSig, disc)
	}
	if got := digestOf([]byte(getManifest(t, b.Addr, upAddr, "site/app", cosignTag))); got != cosignSig {
		t.Errorf("cosign signature at site B: %s, want %s", got, cosignSig)
	}

	// skopeo reads the export itself, by the name index.json gives.
	s := newSkopeo(t, nil)
	skopeoDir := filepath.Join(dir, "skopeo-app")
	s.copy(t, "--preserve-digests", "oci-archive:"+archive+":"+upAddr+"/site/app:v1", "dir:"+skopeoDir)
	checkSkopeoDir(t, skopeoDir, app, app.Blobs)
	// And the directory layout (oci:): an index, of which it takes this
	// machine's platform.
	multiDir := filepath.Join(dir, "skopeo-multi")
	s.copy(t, "--preserve-digests", "oci:"+layoutDir+":"+upAddr+"/site/multi:v1", "dir:"+multiDir)
	checkSkopeoDir(t, multiDir, testImage{Digest: multi.Children[0]}, multi.Blobs)
}

// getManifest GETs a manifest from berth at addr and returns its body.
func getManifest(t testing.TB, addr, registry, repo, reference string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/"+repo+"/manifests/"+reference+"?ns="+registry, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s:%s at %s: %s\n%s", repo, reference, addr, resp.Status, body)
	}
	return string(body)
}

// countFiles counts the regular files under dir (0 when it is absent).
func countFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}
