package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// A manifest read once is answered from memory, still noted as an access
// (eviction and gc go by it), and forgotten with the content: after gc
// removes it, ReadAll says not found, as it did when every read opened
// the file.
func TestReadAllMemoForgottenWithTheContent(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	d := digest.FromBytes(data)
	if err := s.Put(d, v1.MediaTypeImageManifest, data); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		s.acc.m.Delete(d)
		got, info, err := s.ReadAll(d)
		if err != nil || !bytes.Equal(got, data) || info.MediaType != v1.MediaTypeImageManifest {
			t.Fatalf("read %d: %v, %q, %+v", i, err, got, info)
		}
		if _, ok := s.acc.m.Load(d); !ok {
			t.Fatalf("read %d noted no access", i)
		}
	}
	if _, ok := s.meta.bytes.Peek(d); !ok {
		t.Fatal("a manifest read twice is not kept in memory")
	}
	rep, err := s.GC(context.Background(), GCOptions{}) // no tag or pin reaches it: it goes
	if err != nil || len(rep.Removed) != 1 {
		t.Fatalf("gc: %+v, %v", rep, err)
	}
	if _, _, err := s.ReadAll(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAll of removed content: %v, want ErrNotFound", err)
	}
}

// Content larger than memoMaxBytes is read from its file every time.
func TestReadAllMemoBound(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	big := bytes.Repeat([]byte{'x'}, memoMaxBytes+1)
	d := digest.FromBytes(big)
	if err := s.Put(d, "application/octet-stream", big); err != nil {
		t.Fatal(err)
	}
	if got, _, err := s.ReadAll(d); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read: %v", err)
	}
	if _, ok := s.meta.bytes.Peek(d); ok {
		t.Fatal("content over the bound kept in memory")
	}
}

// A manifest marked for one repository is parsed once per repository: a
// second repository's mark of the same manifest still makes its config and
// layers that repository's, and no third repository knows them.
func TestMarkManifestKnownOncePerRepository(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	layer, config := digest.FromString("layer"), digest.FromString("config")
	man := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{Digest: config}, Layers: []v1.Descriptor{{Digest: layer}}}
	man.SchemaVersion = 2
	data, _ := json.Marshal(man)
	d := digest.FromBytes(data)
	a, b, c := oci.Repo{Registry: "r.test", Name: "a"}, oci.Repo{Registry: "r.test", Name: "b"}, oci.Repo{Registry: "r.test", Name: "c"}
	for range 2 {
		if err := s.MarkManifestKnown(a, d, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkManifestKnown(b, d, data); err != nil {
		t.Fatal(err)
	}
	for _, r := range []oci.Repo{a, b} {
		if !s.Known(r, d) || !s.Known(r, layer) || !s.Known(r, config) {
			t.Errorf("%s: manifest, layer, config known: %v %v %v", r, s.Known(r, d), s.Known(r, layer), s.Known(r, config))
		}
	}
	if s.Known(c, d) || s.Known(c, layer) || s.Known(c, config) {
		t.Error("a repository never marked knows the content")
	}
}

// A removal deletes the known pairs of what it removes; a manifest served
// again marks what it names again, though it was marked before.
func TestMarkManifestKnownAgainAfterRemoval(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	layerData := []byte("layer bytes")
	layer := digest.FromBytes(layerData)
	if err := s.Put(layer, "application/octet-stream", layerData); err != nil {
		t.Fatal(err)
	}
	man := v1.Manifest{MediaType: v1.MediaTypeImageManifest, Config: v1.Descriptor{Digest: digest.FromString("config")}, Layers: []v1.Descriptor{{Digest: layer, Size: int64(len(layerData))}}}
	man.SchemaVersion = 2
	data, _ := json.Marshal(man)
	d := digest.FromBytes(data)
	a := oci.Repo{Registry: "r.test", Name: "a"}
	if err := s.MarkManifestKnown(a, d, data); err != nil || !s.Known(a, layer) {
		t.Fatalf("mark: %v, layer known %v", err, s.Known(a, layer))
	}
	if rep, err := s.GC(context.Background(), GCOptions{}); err != nil || len(rep.Removed) != 1 { // the layer: no tag reaches it
		t.Fatalf("gc: %+v, %v", rep, err)
	}
	if s.Known(a, layer) {
		t.Fatal("the removed layer is still known")
	}
	if err := s.Put(layer, "application/octet-stream", layerData); err != nil { // fetched again, say for another repository
		t.Fatal(err)
	}
	if err := s.MarkManifestKnown(a, d, data); err != nil || !s.Known(a, layer) {
		t.Fatalf("the manifest served again: %v, layer known %v, want true", err, s.Known(a, layer))
	}
}
