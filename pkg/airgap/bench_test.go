package airgap

import (
	"bytes"
	"io"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// benchArchive exports one image of four 16 MiB layers from a scratch
// store as a layout tar.
func benchArchive(b *testing.B) (*cache.Store, []Image, []byte) {
	b.Helper()
	s, err := cache.Open(b.TempDir(), cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	img, err := random.Image(16<<20, 4)
	if err != nil {
		b.Fatal(err)
	}
	ds := putImage(b, s, img)
	root := ds[len(ds)-1]
	tag(b, s, repo, "bench", root, "application/vnd.docker.distribution.manifest.v2+json")
	im, err := Resolve(s, "registry.test/site/app:bench")
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := Export(b.Context(), s, []Image{im}, NewTarWriter(&buf), nil); err != nil {
		b.Fatal(err)
	}
	return s, []Image{im}, buf.Bytes()
}

// BenchmarkImport imports a 64 MiB layout tar into an empty store: every
// byte staged, hashed, fsynced and linked.
func BenchmarkImport(b *testing.B) {
	_, _, data := benchArchive(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		s, err := cache.Open(b.TempDir(), cache.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := ImportTar(b.Context(), s, bytes.NewReader(data), ImportOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}

// BenchmarkExport writes a 64 MiB image from a store as a layout tar,
// every blob re-hashed on the way.
func BenchmarkExport(b *testing.B) {
	s, imgs, data := benchArchive(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Export(b.Context(), s, imgs, NewTarWriter(io.Discard), nil); err != nil {
			b.Fatal(err)
		}
	}
}
