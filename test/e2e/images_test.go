package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testImage is what the test pushed to the upstream: the truth every
// client's result is checked against.
type testImage struct {
	Repo, Tag string // repository and tag on the upstream registry
	Digest    string // the tagged manifest's (or index's) digest
	MediaType string
	// Blobs are the config and layers a linux/GOARCH client needs (for an
	// index: those of the GOARCH child); All adds the other platforms'.
	Blobs []string
	All   []string
	// Children are an index's manifests: Children[0] is the GOARCH one.
	Children []string
}

// otherArch is the second platform of test indexes.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// randomImage builds an image of the given manifest, config and layer
// media types for linux/arch, one random layer per size.
func randomImage(t testing.TB, mt, configMT, layerMT types.MediaType, arch string, sizes ...int64) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, mt), configMT)
	for _, n := range sizes {
		l, err := random.Layer(n, layerMT)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Config.Cmd = []string{"/bin/true"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// imageBlobs returns an image's config and layer digests.
func imageBlobs(t testing.TB, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func ref(t testing.TB, registry, repo, tag string) name.Reference {
	t.Helper()
	r, err := name.NewTag(registry+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushImage pushes a random three-layer image for linux/GOARCH: OCI
// types, or Docker schema 2 types when docker is set.
func pushImage(t testing.TB, registry, repo, tag string, docker bool, opts ...remote.Option) testImage {
	t.Helper()
	mt, cmt, lmt := types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer
	if docker {
		mt, cmt, lmt = types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer
	}
	img := randomImage(t, mt, cmt, lmt, runtime.GOARCH, 256<<10, 1<<20, 4<<20)
	if err := remote.Write(ref(t, registry, repo, tag), img, opts...); err != nil {
		t.Fatalf("push %s/%s:%s: %v", registry, repo, tag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	blobs := imageBlobs(t, img)
	return testImage{Repo: repo, Tag: tag, Digest: d.String(), MediaType: string(mt), Blobs: blobs, All: blobs}
}

// pushIndex pushes an OCI index of two platforms (GOARCH first) without
// artifactType in its entries.
func pushIndex(t testing.TB, registry, repo, tag string) testImage {
	t.Helper()
	ti := testImage{Repo: repo, Tag: tag, MediaType: string(types.OCIImageIndex)}
	idx := v1.ImageIndex(empty.Index)
	for i, arch := range []string{runtime.GOARCH, otherArch()} {
		img := randomImage(t, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, arch, 256<<10, 1<<20)
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ti.Children = append(ti.Children, d.String())
		if i == 0 {
			ti.Blobs = imageBlobs(t, img)
		}
		ti.All = append(ti.All, imageBlobs(t, img)...)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	if err := remote.WriteIndex(ref(t, registry, repo, tag), idx); err != nil {
		t.Fatalf("push index %s/%s:%s: %v", registry, repo, tag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ti.Digest = d.String()
	return ti
}

// tagAgain tags an image already pushed (by its digest) with more tags.
func tagAgain(t testing.TB, registry string, ti testImage, tags ...string) {
	t.Helper()
	desc, err := remote.Get(ref(t, registry, ti.Repo, ti.Tag))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		if err := remote.Tag(ref(t, registry, ti.Repo, tag).(name.Tag), desc); err != nil {
			t.Fatalf("tag %s: %v", tag, err)
		}
	}
}

// rawManifest is a manifest pushed as bytes.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// blob is one blob of a hand-made manifest.
type blob struct {
	mt          types.MediaType
	data        []byte
	annotations map[string]string
}

// pushArtifact pushes an OCI image manifest made of config and layers
// (and artifactType, when set) as written, and returns what it pushed.
func pushArtifact(t testing.TB, registry, repo, tag, artifactType string, config blob, layers ...blob) testImage {
	t.Helper()
	r := ref(t, registry, repo, tag)
	desc := func(b blob) v1.Descriptor {
		l := static.NewLayer(b.data, b.mt)
		if err := remote.WriteLayer(r.Context(), l); err != nil {
			t.Fatalf("push blob to %s: %v", r.Context(), err)
		}
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return v1.Descriptor{MediaType: b.mt, Digest: d, Size: int64(len(b.data)), Annotations: b.annotations}
	}
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: desc(config)}
	for _, l := range layers {
		m.Layers = append(m.Layers, desc(l))
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if artifactType != "" { // v1.Manifest has no artifactType field
		var obj map[string]any
		_ = json.Unmarshal(raw, &obj)
		obj["artifactType"] = artifactType
		raw, _ = json.Marshal(obj)
	}
	if err := remote.Put(r, rawManifest{raw, types.OCIManifestSchema1}); err != nil {
		t.Fatalf("push manifest %s: %v", r, err)
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	ti := testImage{Repo: repo, Tag: tag, Digest: d.String(), MediaType: string(types.OCIManifestSchema1)}
	ti.Blobs = append(ti.Blobs, m.Config.Digest.String())
	for _, l := range m.Layers {
		ti.Blobs = append(ti.Blobs, l.Digest.String())
	}
	ti.All = ti.Blobs
	return ti
}

// Helm's OCI media types.
const (
	helmConfigType = "application/vnd.cncf.helm.config.v1+json"
	helmChartType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// pushHelmChart pushes a minimal real chart the way `helm push` lays it
// out, tagged with its version. It returns the image and the chart .tgz.
func pushHelmChart(t testing.TB, registry, repo, chart, version string) (testImage, []byte) {
	t.Helper()
	meta := map[string]string{"apiVersion": "v2", "name": chart, "version": version,
		"description": "berth e2e chart", "type": "application"}
	tgz := chartTgz(t, chart, version)
	cfg, err := json.Marshal(meta)
	if err != nil {
		t.Fatal(err)
	}
	ti := pushArtifact(t, registry, repo+"/"+chart, version, "",
		blob{mt: helmConfigType, data: cfg},
		blob{mt: helmChartType, data: tgz})
	return ti, tgz
}

// chartTgz writes a chart archive: Chart.yaml, values.yaml, one template.
func chartTgz(t testing.TB, chart, version string) []byte {
	t.Helper()
	files := []struct{ name, body string }{
		{"Chart.yaml", fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\ndescription: berth e2e chart\ntype: application\n", chart, version)},
		{"values.yaml", "greeting: hello\n"},
		{"templates/configmap.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  greeting: {{ .Values.greeting }}\n"},
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, f := range files {
		hdr := &tar.Header{Name: chart + "/" + f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
