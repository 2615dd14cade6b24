package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// site is an upstream holding what a site preloads: a three-platform
// index, a cosign signature of it (sha256-<hex>.sig) and an SBOM
// attached by subject (the registry has no referrers API, so the pusher
// writes the sha256-<hex> tag schema index).
type site struct {
	up                   *upstreamtest.Registry
	index                digest.Digest
	platforms            map[string]digest.Digest // arch → manifest
	sig, sbom            digest.Digest
	sigLayer, sbomConfig digest.Digest
}

func newSite(t *testing.T) *site {
	t.Helper()
	s := &site{up: upstreamtest.New(t), platforms: map[string]digest.Digest{}}
	idx := v1.ImageIndex(empty.Index)
	for _, arch := range []string{"amd64", "arm64", "s390x"} {
		img, err := random.Image(16<<10, 1)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		d, _ := img.Digest()
		s.platforms[arch] = digest.Digest(d.String())
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	ih := s.up.PushIndex(t, "site/app", "v1", idx)
	s.index = digest.Digest(ih.String())

	sig, _ := random.Image(512, 1)
	sig = mutate.MediaType(sig, types.OCIManifestSchema1)
	sh := s.up.Push(t, "site/app", "sha256-"+s.index.Encoded()+".sig", sig)
	s.sig = digest.Digest(sh.String())
	l, _ := sig.Layers()
	ld, _ := l[0].Digest()
	s.sigLayer = digest.Digest(ld.String())

	sbom, _ := random.Image(512, 1)
	sbom = mutate.MediaType(sbom, types.OCIManifestSchema1)
	isz, _ := idx.Size()
	sbom = mutate.Subject(sbom, v1.Descriptor{MediaType: types.OCIImageIndex, Digest: ih, Size: isz}).(v1.Image)
	bh, _ := sbom.Digest()
	ref, _ := name.ParseReference(s.up.Host+"/site/app@"+bh.String(), name.Insecure)
	if err := remote.Write(ref, sbom); err != nil {
		t.Fatal(err)
	}
	s.sbom = digest.Digest(bh.String())
	cn, _ := sbom.ConfigName()
	s.sbomConfig = digest.Digest(cn.String())
	return s
}

// TestPreloadListPlatformsReferrers preloads from a list file, straight
// into a cache directory, one platform of an index with its signature and
// SBOM, past an image that does not exist: the command fails naming that
// image only, the store holds the wanted platform and both referrers, all
// pinned, and not the other platforms. A second run asks the upstream for
// no blob again.
func TestPreloadListPlatformsReferrers(t *testing.T) {
	s := newSite(t)
	dir := t.TempDir()
	cfg := siteConfig(t, dir, s.up, "")
	list := filepath.Join(dir, "images.txt")
	os.WriteFile(list, []byte("# what the site runs\n"+s.up.Host+"/site/app:v1\n"+s.up.Host+"/site/missing:v1   # not pushed\n"), 0o644)
	store := filepath.Join(dir, "store")

	run := func() (string, string, error) {
		var out, errb bytes.Buffer
		cmd := rootCmd()
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SetArgs([]string{"preload", "--config", cfg, "--cache-dir", store, "-f", list, "--platform", "linux/arm64"})
		err := cmd.ExecuteContext(t.Context())
		return out.String(), errb.String(), err
	}
	out, errOut, err := run()
	if err == nil || !strings.Contains(err.Error(), "1 of 2 images failed") || !strings.Contains(err.Error(), "site/missing:v1") ||
		strings.Contains(err.Error(), "site/app:v1") {
		t.Fatalf("preload: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	if !strings.Contains(out, "preloaded "+s.up.Host+"/site/app:v1 "+s.index.String()) || !strings.Contains(out, "2 referrers") {
		t.Fatalf("stdout:\n%s", out)
	}
	if strings.Contains(errOut, "\r") || strings.Contains(errOut, "%|") {
		t.Errorf("a progress bar without a terminal:\n%q", errOut)
	}

	st, err := cache.Open(store, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{s.index, s.platforms["arm64"], s.sig, s.sigLayer, s.sbom, s.sbomConfig}
	for _, d := range want {
		if !st.Has(d) {
			t.Errorf("store lacks %s", d)
		}
	}
	for _, arch := range []string{"amd64", "s390x"} {
		if st.Has(s.platforms[arch]) {
			t.Errorf("store holds %s, not asked for", arch)
		}
	}
	pinned, err := st.PinnedSet()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range want { // the pin of the image keeps its referrers too
		if !pinned[d] {
			t.Errorf("%s not pinned", d)
		}
	}
	pins, _ := st.Pins()
	if len(pins) != 1 || pins[0].Ref != s.up.Host+"/site/app:v1" || pins[0].Tag != pins[0].Ref || pins[0].Source != "preload" {
		t.Errorf("pins: %+v", pins)
	}
	st.Close()

	if _, _, err := run(); err == nil {
		t.Fatal("second run: the missing image succeeded")
	}
	for _, d := range want {
		if n := s.up.BlobGETs("site/app", d.String()); n > 1 {
			t.Errorf("upstream served %s %d times", d, n)
		}
	}
}

// TestPreloadProgressBar: on a terminal the bar renders (bytes, percent);
// into a pipe there is none and each image gets a plain line.
func TestPreloadProgressBar(t *testing.T) {
	s := newSite(t)
	dir := t.TempDir()
	cfg := siteConfig(t, dir, s.up, "")

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, ptmx) // until the tty side closes
		got <- b.String()
	}()
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(tty)
	cmd.SetArgs([]string{"preload", "--config", cfg, "--cache-dir", filepath.Join(dir, "a"), s.up.Host + "/site/app:v1"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("preload: %v", err)
	}
	tty.Close()
	var bar string
	select {
	case bar = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("pty reader did not end")
	}
	if !strings.Contains(bar, "preload") || !strings.Contains(bar, "100%") || !strings.Contains(bar, "KiB") && !strings.Contains(bar, "kB") {
		t.Errorf("no progress bar on the terminal:\n%q", bar)
	}

	var errb bytes.Buffer
	out.Reset()
	cmd = rootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs([]string{"preload", "--config", cfg, "--cache-dir", filepath.Join(dir, "b"), s.up.Host + "/site/app:v1"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("preload: %v", err)
	}
	if strings.Contains(errb.String(), "100%") || !strings.Contains(out.String(), "preloaded "+s.up.Host+"/site/app:v1 sha256:") {
		t.Errorf("without a terminal: stdout %q stderr %q", out.String(), errb.String())
	}
}

// TestPreloadAdminDefault: pinning through a berth elsewhere needs its
// admin address named; on loopback the admin listener's default serves.
func TestPreloadAdminDefault(t *testing.T) {
	for addr, want := range map[string]string{
		"http://127.0.0.1:5000": "http://127.0.0.1:5001", "http://localhost:5000": "http://127.0.0.1:5001",
		"http://[::1]:5000": "http://127.0.0.1:5001", "http://10.1.2.3:5000": "", "http://berth.internal:5000": "",
	} {
		if got := defaultAdmin(addr); got != want {
			t.Errorf("defaultAdmin(%s) = %q, want %q", addr, got, want)
		}
	}
	cmd := rootCmd()
	cmd.SetOut(io.Discard)
	cmd.SetArgs([]string{"preload", "--addr", "http://10.1.2.3:5000", "alpine:3.20"})
	if err := cmd.ExecuteContext(t.Context()); err == nil || !strings.Contains(err.Error(), "--admin-addr") {
		t.Fatalf("preload through a remote berth without --admin-addr: %v", err)
	}
}

// TestPreloadSelectsPlatforms: --platform keeps the entries of those
// platforms, entries without a platform, and buildx's attestation
// manifests of the kept entries; without it every entry stays.
func TestPreloadSelectsPlatforms(t *testing.T) {
	d := func(s string) digest.Digest { return digest.FromString(s) }
	plat := func(arch string) *ocispec.Platform { return &ocispec.Platform{OS: "linux", Architecture: arch} }
	att := func(of string) ocispec.Descriptor {
		return ocispec.Descriptor{Digest: d("att-" + of), Platform: &ocispec.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{dockerRefType: "attestation-manifest", dockerRefDigest: d(of).String()}}
	}
	entries := []ocispec.Descriptor{
		{Digest: d("amd64"), Platform: plat("amd64")}, {Digest: d("arm64"), Platform: &ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{Digest: d("artifact")}, att("amd64"), att("arm64"),
	}
	match, err := platformMatcher([]string{"linux/arm64"})
	if err != nil {
		t.Fatal(err)
	}
	var got []digest.Digest
	for _, e := range (&preloader{match: match}).selected(entries, true) {
		got = append(got, e.Digest)
	}
	want := []digest.Digest{d("arm64"), d("artifact"), d("att-arm64")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("selected %v, want %v", got, want)
	}
	if n := len((&preloader{}).selected(entries, true)); n != len(entries) {
		t.Errorf("without --platform: %d of %d entries", n, len(entries))
	}
	if _, err := platformMatcher([]string{"linux/arm64", "not a/platform/at/all"}); err == nil {
		t.Error("a bad --platform was accepted")
	}
}

// TestPreloadCacheDirIgnoresClientAccess: a config whose registry has
// upstream credentials (so its clients must authenticate) and a client
// rule still preloads straight into its cache directory: the command's own
// node serves the operator alone.
func TestPreloadCacheDirIgnoresClientAccess(t *testing.T) {
	s := newSite(t)
	dir := t.TempDir()
	cfg := siteConfig(t, dir, s.up, "    username: site\n    password: not-checked-upstream\n    rules:\n      - repos: [\"site/**\"]\n        access: deny\n")
	var out bytes.Buffer
	cmd := rootCmd()
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"preload", "--config", cfg, "--cache-dir", filepath.Join(dir, "store"), "--no-referrers", s.up.Host + "/site/app:v1"})
	if err := cmd.ExecuteContext(t.Context()); err != nil {
		t.Fatalf("preload: %v\n%s", err, out.String())
	}
}
