package airgap

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/google/go-containerregistry/pkg/name"
	ggv1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openStore(t *testing.T) *cache.Store {
	t.Helper()
	s, err := cache.Open(t.TempDir(), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// putImage commits img's layers, config and manifest into s, as fills
// would, and returns every digest it holds.
func putImage(t testing.TB, s *cache.Store, img ggv1.Image) []digest.Digest {
	t.Helper()
	layers, _ := img.Layers()
	var out []digest.Digest
	for _, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		rc, _ := l.Compressed()
		st, err := s.Stage(rc, digest.Digest(d.String()), size)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(""); err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Digest)
	}
	cfg, _ := img.RawConfigFile()
	out = append(out, put(t, s, "", cfg))
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	return append(out, put(t, s, string(mt), raw))
}

func put(t testing.TB, s *cache.Store, mt string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	if err := s.Put(d, mt, data); err != nil {
		t.Fatal(err)
	}
	return d
}

func tag(t testing.TB, s *cache.Store, repo oci.Repo, tg string, d digest.Digest, mt string) {
	t.Helper()
	if err := s.SetTag(cache.TagKey(repo.Registry, repo.Name, tg), cache.Tag{Digest: d, MediaType: mt}); err != nil {
		t.Fatal(err)
	}
}

var repo = oci.Repo{Registry: "registry.test", Name: "site/app"}

// fixture fills a store with a two-platform index tagged v1, an OCI 1.1
// referrer of the index (an SBOM, by subject) and a cosign signature
// under sha256-<hex>.sig; it returns the store and every digest of it.
func fixture(t *testing.T) (*cache.Store, []digest.Digest, digest.Digest) {
	t.Helper()
	s := openStore(t)
	var all []digest.Digest
	idx := ggv1.ImageIndex(empty.Index)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(64<<10, 2)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		all = append(all, putImage(t, s, img)...)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: ggv1.Descriptor{Platform: &ggv1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	raw, _ := idx.RawManifest()
	root := put(t, s, string(types.OCIImageIndex), raw)
	all = append(all, root)
	tag(t, s, repo, "v1", root, string(types.OCIImageIndex))

	sbom := []byte("an sbom")
	all = append(all, put(t, s, "", sbom))
	ref := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json",` +
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
		`"layers":[{"mediaType":"application/spdx+json","digest":"` + digest.FromBytes(sbom).String() + `","size":7}],` +
		`"subject":{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"` + root.String() + `","size":` + strconv.Itoa(len(raw)) + `}}`)
	all = append(all, put(t, s, "", []byte("{}")))
	all = append(all, put(t, s, "application/vnd.oci.image.manifest.v1+json", ref))

	sig, err := random.Image(1<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	sig = mutate.MediaType(sig, types.OCIManifestSchema1)
	sigDigests := putImage(t, s, sig)
	all = append(all, sigDigests...)
	tag(t, s, repo, "sha256-"+root.Encoded()+".sig", sigDigests[len(sigDigests)-1], string(types.OCIManifestSchema1))
	return s, all, root
}

func exportTar(t *testing.T, s *cache.Store, refs ...string) []byte {
	t.Helper()
	var imgs []Image
	for _, r := range refs {
		img, err := Resolve(s, r)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	var buf bytes.Buffer
	if _, err := Export(t.Context(), s, imgs, NewTarWriter(&buf), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExportImportRoundTrip carries an index, its platforms, a referrer
// and a cosign signature from one store to another through a tar and a
// directory: every digest arrives, pinned, and the tags come along.
func TestExportImportRoundTrip(t *testing.T) {
	for _, asDir := range []bool{false, true} {
		t.Run(map[bool]string{false: "tar", true: "dir"}[asDir], func(t *testing.T) {
			a, all, root := fixture(t)
			img, err := Resolve(a, "registry.test/site/app:v1")
			if err != nil {
				t.Fatal(err)
			}
			b := openStore(t)
			var rep Report
			if asDir {
				dir := filepath.Join(t.TempDir(), "layout")
				w, err := NewDirWriter(dir)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := Export(t.Context(), a, []Image{img}, w, nil); err != nil {
					t.Fatal(err)
				}
				rep, err = ImportDir(t.Context(), b, dir, ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				data := exportTar(t, a, "registry.test/site/app:v1")
				rep, err = ImportTar(t.Context(), b, bytes.NewReader(data), ImportOptions{})
				if err != nil {
					t.Fatal(err)
				}
			}
			if rep.Images != 3 { // the image, the sbom, the signature
				t.Errorf("imported %d images, want 3: %+v", rep.Images, rep)
			}
			pinned, err := b.PinnedSet()
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range all {
				if !b.Has(d) {
					t.Fatalf("store lacks %s after import", d)
				}
				if !pinned[d] {
					t.Errorf("%s not pinned", d)
				}
			}
			for _, d := range all { // berth serves it in its repository as its upstream would
				if !b.Known(repo, d) {
					t.Errorf("%s not known in %s", d, repo)
				}
			}
			if pins, _ := b.Pins(); len(pins) != 3 || pins[0].Source != "import" {
				t.Errorf("pins: %+v", pins) // the image, its signature by tag, its sbom by digest
			}
			for _, key := range []string{"registry.test/site/app:v1", "registry.test/site/app:sha256-" + root.Encoded() + ".sig"} {
				ta, _ := a.Tag(key)
				tb, err := b.Tag(key)
				if err != nil || tb.Digest != ta.Digest {
					t.Errorf("tag %s: got %v %v, want %s", key, tb.Digest, err, ta.Digest)
				}
			}
			if info, _ := b.Info(root); info.MediaType != string(types.OCIImageIndex) {
				t.Errorf("index media type %q", info.MediaType)
			}
			// Again: idempotent, nothing new.
			before, _ := b.Usage()
			data := exportTar(t, a, "registry.test/site/app:v1")
			if _, err := ImportTar(t.Context(), b, bytes.NewReader(data), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			if after, _ := b.Usage(); after != before {
				t.Errorf("second import moved usage %d -> %d", before, after)
			}
			assertNoTemp(t, b)
		})
	}
}

// mutateTar rewrites the tar entry named name with change applied.
func mutateTar(t *testing.T, data []byte, name string, change func([]byte) []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == name {
			body, found = change(body), true
			h.Size = int64(len(body))
		}
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	if !found {
		t.Fatalf("no entry %s", name)
	}
	return out.Bytes()
}

func blobName(d digest.Digest) string { return "blobs/sha256/" + d.Encoded() }

// TestImportRejectsBadArchives: a flipped byte, a truncated blob, a cut
// tar and a missing layer each fail naming the digest, and the store keeps
// nothing: no blob, no tag, no temp file.
func TestImportRejectsBadArchives(t *testing.T) {
	a, all, _ := fixture(t)
	data := exportTar(t, a, "registry.test/site/app:v1")
	layer := all[0] // the first image's first layer
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"flipped byte", mutateTar(t, data, blobName(layer), func(b []byte) []byte { b[len(b)/2] ^= 1; return b }), layer.String()},
		{"truncated blob", mutateTar(t, data, blobName(layer), func(b []byte) []byte { return b[:len(b)-100] }), layer.String()},
		{"cut archive", data[:len(data)*2/3], "unexpected EOF"},
		{"layer missing", dropEntry(t, data, blobName(layer)), layer.String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := openStore(t)
			_, err := ImportTar(t.Context(), b, bytes.NewReader(c.data), ImportOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("import: %v, want an error naming %s", err, c.want)
			}
			if n, blobs := b.Usage(); n != 0 || blobs != 0 {
				t.Errorf("store holds %d blobs (%d bytes) after a failed import", blobs, n)
			}
			if tags, _ := b.TagsWithPrefix(""); len(tags) != 0 {
				t.Errorf("tags recorded: %v", tags)
			}
			assertNoTemp(t, b)
		})
	}
}

func dropEntry(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if h.Name == name {
			continue
		}
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	return out.Bytes()
}

func assertNoTemp(t *testing.T, s *cache.Store) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(s.Root(), "tmp"))
	if len(entries) != 0 {
		t.Errorf("%d temp files left", len(entries))
	}
}

// TestImportDockerSave loads a gzipped docker save archive (written by
// go-containerregistry's tarball package, gzipped layers) and checks the
// layers against the config's diff_ids: a tampered layer fails.
func TestImportDockerSave(t *testing.T) {
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := name.NewTag("alpine:3.20")
	var buf bytes.Buffer
	if err := tarball.Write(tg, img, &buf); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer // as docker save | gzip writes it
	zw := gzip.NewWriter(&gz)
	zw.Write(buf.Bytes())
	zw.Close()
	s := openStore(t)
	rep, err := ImportTar(t.Context(), s, &gz, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := s.Tag("docker.io/library/alpine:3.20")
	if err != nil {
		t.Fatalf("tag: %v (report %+v)", err, rep)
	}
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if !s.Has(digest.Digest(d.String())) {
			t.Errorf("layer %s not stored", d)
		}
	}
	cfg, _ := img.ConfigName()
	if !s.Has(digest.Digest(cfg.String())) || !s.Has(tgt.Digest) {
		t.Errorf("config or manifest missing")
	}

	// A layer changed after the save: its diff_id no longer matches.
	l0, _ := layers[0].Digest()
	bad := mutateTar(t, buf.Bytes(), l0.Hex+".tar.gz", func(b []byte) []byte {
		other, _ := random.Layer(1<<10, types.DockerLayer)
		rc, _ := other.Compressed()
		defer rc.Close()
		nb, _ := io.ReadAll(rc)
		return nb
	})
	s2 := openStore(t)
	if _, err := ImportTar(t.Context(), s2, bytes.NewReader(bad), ImportOptions{}); err == nil || !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("tampered docker save: %v", err)
	}
	if n, _ := s2.Usage(); n != 0 {
		t.Errorf("tampered docker save left %d bytes", n)
	}
}

// TestExportLeavesOutMissingPlatforms: an index whose arm64 image was not
// preloaded exports with what the store holds, says what it left out, and
// imports.
func TestExportLeavesOutMissingPlatforms(t *testing.T) {
	s := openStore(t)
	idx := ggv1.ImageIndex(empty.Index)
	var missing digest.Digest
	for i, arch := range []string{"amd64", "arm64"} {
		img, _ := random.Image(1<<10, 1)
		if i == 0 {
			putImage(t, s, img)
		} else {
			d, _ := img.Digest()
			missing = digest.Digest(d.String())
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img,
			Descriptor: ggv1.Descriptor{Platform: &ggv1.Platform{OS: "linux", Architecture: arch}}})
	}
	raw, _ := idx.RawManifest()
	tag(t, s, repo, "v2", put(t, s, string(types.OCIImageIndex), raw), string(types.OCIImageIndex))
	img, err := Resolve(s, "registry.test/site/app:v2")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	rep, err := Export(context.Background(), s, []Image{img}, NewTarWriter(&buf), nil)
	if err != nil || len(rep.Missing) != 1 || rep.Missing[0] != missing {
		t.Fatalf("export: %v, missing %v, want %s", err, rep.Missing, missing)
	}
	b := openStore(t)
	rep, err = ImportTar(t.Context(), b, &buf, ImportOptions{})
	if err != nil || len(rep.Missing) != 1 {
		t.Fatalf("import: %v %+v", err, rep)
	}
}

// TestImportBareTagNeedsRepo: a layout whose index.json names an image by
// a bare tag (as skopeo's oci:DIR:TAG writes it) is imported untagged and
// reported, or tagged in ImportOptions.Repo.
func TestImportBareTagNeedsRepo(t *testing.T) {
	a := openStore(t)
	img, _ := random.Image(1<<10, 1)
	ds := putImage(t, a, img)
	root := ds[len(ds)-1]
	var buf bytes.Buffer
	mt, _ := img.MediaType()
	tag(t, a, repo, "v3", root, string(mt))
	im, err := Resolve(a, "registry.test/site/app:v3")
	if err != nil {
		t.Fatal(err)
	}
	im.Ref = "v3" // what skopeo writes
	if _, err := Export(t.Context(), a, []Image{im}, NewTarWriter(&buf), nil); err != nil {
		t.Fatal(err)
	}
	b := openStore(t)
	rep, err := ImportTar(t.Context(), b, bytes.NewReader(buf.Bytes()), ImportOptions{})
	if err != nil || len(rep.Skipped) != 1 || len(rep.Tags) != 0 || !b.Has(root) {
		t.Fatalf("import without repo: %v %+v", err, rep)
	}
	c := openStore(t)
	other := oci.Repo{Registry: "mirror.test", Name: "team/app"}
	rep, err = ImportTar(t.Context(), c, bytes.NewReader(buf.Bytes()), ImportOptions{Repo: other})
	if err != nil || len(rep.Tags) != 1 {
		t.Fatalf("import with repo: %v %+v", err, rep)
	}
	if got, err := c.Tag("mirror.test/team/app:v3"); err != nil || got.Digest != root {
		t.Errorf("tag: %v %v, want %s", got, err, root)
	}
}

// TestImportDockerSaveUncompressed: docker save writes each layer as an
// uncompressed layer.tar under a directory and the config as <hex>.json;
// the layers' own digests are the diff_ids. A config whose name does not
// match its bytes fails.
func TestImportDockerSaveUncompressed(t *testing.T) {
	layer := []byte(strings.Repeat("layer bytes ", 1000))
	diffID := digest.FromBytes(layer)
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + diffID.String() + `"]}}`)
	cfgD := digest.FromBytes(cfg)
	build := func(cfgName string) []byte {
		manifest := []byte(`[{"Config":"` + cfgName + `","RepoTags":["team/app:v1"],"Layers":["abc/layer.tar"]}]`)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, f := range []struct {
			name string
			data []byte
		}{{"abc/VERSION", []byte("1.0")}, {"abc/json", []byte("{}")}, {"abc/layer.tar", layer}, {cfgName, cfg}, {"manifest.json", manifest}} {
			tw.WriteHeader(&tar.Header{Name: f.name, Size: int64(len(f.data)), Mode: 0o644, Typeflag: tar.TypeReg})
			tw.Write(f.data)
		}
		tw.Close()
		return buf.Bytes()
	}
	s := openStore(t)
	if _, err := ImportTar(t.Context(), s, bytes.NewReader(build(cfgD.Encoded()+".json")), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	tg, err := s.Tag("docker.io/team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	data, info, err := s.ReadAll(tg.Digest)
	if err != nil || info.MediaType != "application/vnd.oci.image.manifest.v1+json" ||
		!strings.Contains(string(data), diffID.String()) || !strings.Contains(string(data), "vnd.oci.image.layer.v1.tar\"") {
		t.Fatalf("manifest %s (%v): %s", info.MediaType, err, data)
	}
	if !s.Has(diffID) || !s.Has(cfgD) {
		t.Error("layer or config not stored")
	}
	// The config renamed: its bytes no longer match the name.
	wrong := digest.FromString("another config").Encoded() + ".json"
	data = build(wrong)
	s2 := openStore(t)
	if _, err := ImportTar(t.Context(), s2, bytes.NewReader(data), ImportOptions{}); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("renamed config: %v", err)
	}
	if n, _ := s2.Usage(); n != 0 {
		t.Errorf("refused import left %d bytes", n)
	}
}

// TestImportDockerSaveRepeatedLayer: two layers of the same bytes (docker
// save writes each under its own directory) are stored once, and the
// image imports.
func TestImportDockerSaveRepeatedLayer(t *testing.T) {
	layer := []byte(strings.Repeat("same ", 500))
	diffID := digest.FromBytes(layer)
	cfg := []byte(`{"os":"linux","rootfs":{"type":"layers","diff_ids":["` + diffID.String() + `","` + diffID.String() + `"]}}`)
	cfgName := digest.FromBytes(cfg).Encoded() + ".json"
	manifest := []byte(`[{"Config":"` + cfgName + `","RepoTags":["registry.test/team/rep:v1"],"Layers":["a/layer.tar","b/layer.tar"]}]`)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{"a/layer.tar", layer}, {"b/layer.tar", layer}, {cfgName, cfg}, {"manifest.json", manifest}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Size: int64(len(f.data)), Mode: 0o644, Typeflag: tar.TypeReg})
		tw.Write(f.data)
	}
	tw.Close()
	s := openStore(t)
	rep, err := ImportTar(t.Context(), s, &buf, ImportOptions{})
	if err != nil || rep.Blobs != 2 {
		t.Fatalf("import: %v %+v", err, rep)
	}
	if _, err := s.Tag("registry.test/team/rep:v1"); err != nil || !s.Has(diffID) {
		t.Fatalf("tag %v, layer stored %v", err, s.Has(diffID))
	}
	assertNoTemp(t, s)
}
