package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

func berthRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// siteConfig writes dir/berth.yaml naming up as the only registry (no
// default), extra (more of its lines) following, and returns its path.
func siteConfig(t *testing.T, dir string, up *upstreamtest.Registry, extra string) string {
	t.Helper()
	cfg := filepath.Join(dir, "berth.yaml")
	yaml := "defaultRegistry: \"\"\nregistries:\n  - name: \"" + up.Host + "\"\n    endpoints: [\"" + up.URL + "\"]\n" + extra
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// pushIndex pushes a two-platform index to up as repo:tag and returns
// every digest of it, the index's last.
func pushIndex(t *testing.T, up *upstreamtest.Registry, repo, tag string) []digest.Digest {
	return pushIndexOf(t, up, repo, tag, 32<<10)
}

// pushIndexOf is pushIndex with layers of size bytes.
func pushIndexOf(t *testing.T, up *upstreamtest.Registry, repo, tag string, size int64) []digest.Digest {
	t.Helper()
	var all []digest.Digest
	idx := v1.ImageIndex(empty.Index)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(size, 2)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
		d, _ := img.Digest()
		cfg, _ := img.ConfigName()
		all = append(all, digest.Digest(d.String()), digest.Digest(cfg.String()))
		layers, _ := img.Layers()
		for _, l := range layers {
			ld, _ := l.Digest()
			all = append(all, digest.Digest(ld.String()))
		}
	}
	return append(all, digest.Digest(up.PushIndex(t, repo, tag, idx).String()))
}

// TestExportImportThroughAdminAPIAndCacheDir: images preloaded into a
// running node are exported through its admin API, imported into a
// stopped store's directory, exported from there as a directory, and
// imported into the running node again: the same digests and tag arrive
// each time, and a file of references with comments names them.
func TestExportImportThroughAdminAPIAndCacheDir(t *testing.T) {
	up := upstreamtest.New(t)
	all := pushIndex(t, up, "site/app", "v1")
	n := nodetest.Start(t, up)
	admin := httptest.NewServer(n.AdminHandler())
	defer admin.Close()
	if out, err := berthRun(t, "preload", "--addr", n.URL, "--admin-addr", admin.URL, up.Host+"/site/app:v1"); err != nil {
		t.Fatalf("preload: %v\n%s", err, out)
	}

	dir := t.TempDir()
	list := filepath.Join(dir, "images.txt")
	os.WriteFile(list, []byte("# the site's images\n"+up.Host+"/site/app:v1  # app\n\n"), 0o644)
	tarFile := filepath.Join(dir, "site.tar")
	if out, err := berthRun(t, "export", "--addr", admin.URL, "-f", list, "-o", tarFile); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}

	storeB := filepath.Join(dir, "b")
	out, err := berthRun(t, "import", "--cache-dir", storeB, tarFile)
	if err != nil || !strings.Contains(out, "tagged "+up.Host+"/site/app:v1") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	layout := filepath.Join(dir, "layout")
	if out, err := berthRun(t, "export", "--cache-dir", storeB, "-o", layout, up.Host+"/site/app:v1"); err != nil {
		t.Fatalf("export dir: %v\n%s", err, out)
	}
	s, err := cache.Open(storeB, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range all {
		if !s.Has(d) {
			t.Errorf("store B lacks %s", d)
		}
	}
	s.Close()

	// Into a running node that holds nothing yet, from the directory.
	up2 := upstreamtest.New(t)
	n2 := nodetest.Start(t, up2)
	admin2 := httptest.NewServer(n2.AdminHandler())
	defer admin2.Close()
	if out, err := berthRun(t, "import", "--addr", admin2.URL, layout); err != nil {
		t.Fatalf("import --addr: %v\n%s", err, out)
	}
	for _, d := range all {
		if !n2.Store().Has(d) {
			t.Errorf("node 2 lacks %s", d)
		}
	}
	if _, err := n2.Store().Tag(cache.TagKey(up.Host, "site/app", "v1")); err != nil {
		t.Errorf("node 2 tag: %v", err)
	}

	// A tampered archive is refused over the API, naming the digest.
	data, _ := os.ReadFile(tarFile)
	i := bytes.Index(data, []byte("blobs/sha256/"+all[2].Encoded()))
	if i < 0 {
		t.Fatal("layer not in the tar")
	}
	data[i+1024] ^= 0xff // the header is 512 bytes (PAX: more); flip a byte of the body
	bad := filepath.Join(dir, "bad.tar")
	os.WriteFile(bad, data, 0o644)
	up3 := upstreamtest.New(t)
	n3 := nodetest.Start(t, up3)
	admin3 := httptest.NewServer(n3.AdminHandler())
	defer admin3.Close()
	if _, err := berthRun(t, "import", "--addr", admin3.URL, bad); err == nil || !strings.Contains(err.Error(), "DIGEST_INVALID") {
		t.Fatalf("tampered import: %v", err)
	}
	if b, blobs := n3.Store().Usage(); b != 0 || blobs != 0 {
		t.Errorf("tampered import left %d blobs", blobs)
	}
	// Unknown images are a clean error.
	if _, err := berthRun(t, "export", "--addr", admin.URL, "-o", filepath.Join(dir, "none.tar"), up.Host+"/site/none:v9"); err == nil {
		t.Fatal("export of an unknown image succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "none.tar")); err == nil {
		t.Error("a failed export left its output")
	}
}

// TestExportPinned: --pinned exports every pinned image under the tag
// that names it (preload pins what it loads), and nothing unpinned.
func TestExportPinned(t *testing.T) {
	up := upstreamtest.New(t)
	pinned := pushIndex(t, up, "site/app", "v1")
	loose := pushIndex(t, up, "site/other", "v1")
	dir := t.TempDir()
	cfg := siteConfig(t, dir, up, "")
	store := filepath.Join(dir, "store")
	if out, err := berthRun(t, "preload", "--config", cfg, "--cache-dir", store, up.Host+"/site/app:v1"); err != nil {
		t.Fatalf("preload: %v\n%s", err, out)
	}
	if out, err := berthRun(t, "preload", "--config", cfg, "--cache-dir", store, "--no-pin", up.Host+"/site/other:v1"); err != nil {
		t.Fatalf("preload: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "pinned.tar")
	if o, err := berthRun(t, "export", "--cache-dir", store, "--pinned", "-o", out); err != nil || !strings.Contains(o, "exported 1 images") {
		t.Fatalf("export --pinned: %v\n%s", err, o)
	}
	b := filepath.Join(dir, "b")
	if o, err := berthRun(t, "import", "--cache-dir", b, out); err != nil || !strings.Contains(o, "tagged "+up.Host+"/site/app:v1") {
		t.Fatalf("import: %v\n%s", err, o)
	}
	s, err := cache.Open(b, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range pinned {
		if !s.Has(d) {
			t.Errorf("pinned image's %s not exported", d)
		}
	}
	if s.Has(loose[len(loose)-1]) {
		t.Error("an unpinned image was exported")
	}
}

// TestExportImportThroughAPipe: export -o - writes the tar to standard
// output (its report to standard error) and import - reads it from
// standard input, as `berth export ... -o - | ssh site berth import -` does.
func TestExportImportThroughAPipe(t *testing.T) {
	up := upstreamtest.New(t)
	all := pushIndex(t, up, "site/app", "v1")
	dir := t.TempDir()
	cfg := siteConfig(t, dir, up, "")
	store := filepath.Join(dir, "store")
	if out, err := berthRun(t, "preload", "--config", cfg, "--cache-dir", store, up.Host+"/site/app:v1"); err != nil {
		t.Fatalf("preload: %v\n%s", err, out)
	}
	var archive, report bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&archive)
	cmd.SetErr(&report)
	cmd.SetArgs([]string{"export", "--cache-dir", store, "-o", "-", up.Host + "/site/app:v1"})
	if err := cmd.ExecuteContext(t.Context()); err != nil || !strings.Contains(report.String(), "exported 1 images") {
		t.Fatalf("export -o -: %v\n%s", err, report.String())
	}
	var out bytes.Buffer
	cmd = rootCmd()
	cmd.SetIn(&archive)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"import", "--cache-dir", filepath.Join(dir, "b"), "-"})
	if err := cmd.ExecuteContext(t.Context()); err != nil || !strings.Contains(out.String(), "imported 1 images") {
		t.Fatalf("import -: %v\n%s", err, out.String())
	}
	s, err := cache.Open(filepath.Join(dir, "b"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range all {
		if !s.Has(d) {
			t.Errorf("%s did not arrive", d)
		}
	}
}
