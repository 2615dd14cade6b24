package cache

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

func TestGCMinAgeZeroMeansZero(t *testing.T) {
	s := openStore(t)
	stray := putBlobs(t, s, 1, 100)[0] // used a moment ago, referenced by nothing
	rep, err := s.GC(t.Context(), GCOptions{MinAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0] != stray || s.Has(stray) {
		t.Fatalf("gc with min age 0: %+v; stored %v", rep, s.Has(stray))
	}
	if _, err := s.GC(t.Context(), GCOptions{MinAge: -time.Second}); err == nil {
		t.Fatal("a negative min age was taken")
	}
}

func TestGCNeverRemovesPinnedImages(t *testing.T) {
	s := openStore(t)
	index, pinned := image(t, s, "r.example", "app", "v1", 1000)
	// The tag goes (evicted, or never cached: an image preloaded by digest).
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTags).Delete([]byte(TagKey("r.example", "app", "v1"))) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddPin(Pin{Ref: "r.example/app@" + index.String(), Digest: index, Source: "preload"}); err != nil {
		t.Fatal(err)
	}
	stray := putBlobs(t, s, 1, 100)[0]
	rep, err := s.GC(t.Context(), GCOptions{MinAge: 0})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0] != stray {
		t.Fatalf("gc removed %v, want only %s", rep.Removed, stray)
	}
	assertKept(t, s, pinned)
	if rep.Pinned != len(pinned) {
		t.Fatalf("gc counted %d pinned, want %d", rep.Pinned, len(pinned))
	}
	pins, err := s.Pins()
	if err != nil || len(pins) != 1 || pins[0].Blobs != len(pins[0].Missing)+len(pinned) || len(pins[0].Missing) != 0 {
		t.Fatalf("pins: %+v %v", pins, err)
	}
	if _, err := s.RemovePin("r.example/app@" + index.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePin("r.example/app@" + index.String()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second unpin: %v", err)
	}
	if _, err := s.GC(t.Context(), GCOptions{MinAge: 0}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{pinned[0], pinned[1], pinned[3], pinned[4]} { // the image (its config is the cached cosign tag's too)
		if s.Has(d) {
			t.Errorf("unpinned %s kept", d)
		}
	}
}

func TestPinByTagFollowsTheTagAndKeepsItsDigest(t *testing.T) {
	s := openStore(t)
	v1, first := image(t, s, "r.example", "app", "v1", 100)
	key := TagKey("r.example", "app", "v1")
	if _, err := s.AddPin(Pin{Ref: "r.example/app:v1", Tag: key, Digest: v1, Source: "cli"}); err != nil {
		t.Fatal(err)
	}
	// The tag moves upstream, and the mirror records it.
	v2, second := image(t, s, "r.example", "other", "v2", 100)
	if err := s.SetTag(key, Tag{Digest: v2, MediaType: mtIndex}); err != nil {
		t.Fatal(err)
	}
	set, err := s.PinnedSet()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append(first, second[:5]...) {
		if !set[d] {
			t.Errorf("%s not pinned", d)
		}
	}
	pins, _ := s.Pins()
	if len(pins) != 1 || pins[0].Current != v2 || pins[0].Digest != v1 {
		t.Fatalf("pins: %+v", pins)
	}
	// Unpin by digest drops every pin rooted there.
	if err := s.Unpin(v1); err != nil {
		t.Fatal(err)
	}
	if set, _ := s.PinnedSet(); len(set) != 0 {
		t.Fatalf("pinned after unpin: %v", set)
	}
}

func TestPinOfAbsentContentFails(t *testing.T) {
	s := openStore(t)
	_, d := randomBlob(t, 10)
	if err := s.Pin(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pin of absent content: %v", err)
	}
	if pins, _ := s.Pins(); len(pins) != 0 {
		t.Fatalf("pins: %v", pins)
	}
}

func TestPinListsPlatformsNotStored(t *testing.T) {
	s := openStore(t)
	missing := digest.FromString("a platform never pulled")
	index := putManifest(t, s, map[string]any{"schemaVersion": 2, "mediaType": mtIndex,
		"manifests": []any{map[string]any{"mediaType": mtManifest, "digest": missing, "size": 10}}})
	st, err := s.AddPin(Pin{Digest: index})
	if err != nil {
		t.Fatal(err)
	}
	if st.Ref != index.String() || st.Blobs != 1 || !slices.Equal(st.Missing, []digest.Digest{missing}) {
		t.Fatalf("pin status: %+v", st)
	}
}

// TestReconcileRestoresManifestMediaType simulates a crash between link
// and index: manifest files in blobs/ with no index entry.
func TestReconcileRestoresManifestMediaType(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	docker := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1},"layers":[]}`)
	ociIndex := []byte(`{"schemaVersion":2,"manifests":[]}`)
	layer := []byte(`{"not":"a manifest"}`)
	want := map[digest.Digest]string{
		digest.FromBytes(docker):   "application/vnd.docker.distribution.manifest.v2+json",
		digest.FromBytes(ociIndex): mtIndex,
		digest.FromBytes(layer):    "",
	}
	for _, data := range [][]byte{docker, ociIndex, layer} {
		p := s.BlobPath(digest.FromBytes(data))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for d, mt := range want {
		info, err := s.Info(d)
		if err != nil || info.MediaType != mt {
			t.Errorf("%s after restart: media type %q (%v), want %q", d, info.MediaType, err, mt)
		}
	}
	// Content indexed with no type before this fix is typed when read.
	d := digest.FromBytes(docker)
	info, _ := s.Info(d)
	info.MediaType = ""
	if err := s.putInfo(info); err != nil {
		t.Fatal(err)
	}
	if _, info, err := s.ReadAll(d); err != nil || info.MediaType != want[d] {
		t.Fatalf("read of an untyped manifest: %q %v", info.MediaType, err)
	}
}

func TestPinMarksAreListedByTheirTopmostImage(t *testing.T) {
	s := openStore(t)
	index, all := image(t, s, "r.example", "app", "v1", 100)
	for _, d := range all { // as import pins: every blob, children first
		if err := s.Pin(d); err != nil {
			t.Fatal(err)
		}
	}
	pins, err := s.Pins()
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, p := range pins {
		refs = append(refs, p.Ref)
	}
	// The index alone: its manifest, config, layers, signature and cosign
	// tag's manifest all hang from it.
	if len(pins) != 1 || refs[0] != index.String() || pins[0].Blobs != len(all) {
		t.Fatalf("pins listed: %v", refs)
	}
	if err := s.Unpin(index); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(index); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second unpin: %v", err)
	}
}
