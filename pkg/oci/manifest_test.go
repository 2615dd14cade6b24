package oci_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/pkg/oci"
)

func TestDecodeManifest(t *testing.T) {
	t.Parallel()
	dg := func(c string) digest.Digest { return digest.FromString(c) }
	tests := []struct {
		name     string
		data     string
		blobs    []digest.Digest // BlobDescriptors, in order
		children []digest.Digest
		subject  digest.Digest
		names    bool
	}{
		{
			name: "image manifest",
			data: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
				"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + dg("c").String() + `","size":1},
				"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + dg("l1").String() + `","size":2},
				          {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + dg("l2").String() + `","size":3}],
				"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + dg("s").String() + `","size":4}}`,
			blobs: []digest.Digest{dg("c"), dg("l1"), dg("l2")}, subject: dg("s"), names: true,
		},
		{
			name: "docker manifest list",
			data: `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",
				"manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"` + dg("m").String() + `","size":5,
				"platform":{"architecture":"amd64","os":"linux"}}]}`,
			children: []digest.Digest{dg("m")}, names: true,
		},
		{
			name:  "artifact manifest",
			data:  `{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"x","blobs":[{"mediaType":"a","digest":"` + dg("b").String() + `","size":6}]}`,
			blobs: []digest.Digest{dg("b")}, names: true,
		},
		{name: "a config blob", data: `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := oci.DecodeManifest([]byte(tt.data))
			if err != nil {
				t.Fatal(err)
			}
			var blobs, children []digest.Digest
			for _, d := range m.BlobDescriptors() {
				blobs = append(blobs, d.Digest)
			}
			for _, d := range m.Manifests {
				children = append(children, d.Digest)
			}
			var subject digest.Digest
			if m.Subject != nil {
				subject = m.Subject.Digest
			}
			got := []any{blobs, children, subject, m.NamesContent()}
			want := []any{tt.blobs, tt.children, tt.subject, tt.names}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("blobs, children, subject, names (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCheckManifestTakesOnlyWhatDecodes: what berth stores is what its
// one decoder reads, so the gc and the exporter never miss a reference.
func TestCheckManifestTakesOnlyWhatDecodes(t *testing.T) {
	t.Parallel()
	data := `{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json",
		"blobs":[{"mediaType":"a","digest":"` + digest.FromString("b").String() + `","size":"6"}]}`
	if _, err := oci.DecodeManifest([]byte(data)); err == nil {
		t.Fatal("a size that is a string decodes")
	}
	if _, err := oci.CheckManifest("application/vnd.oci.artifact.manifest.v1+json", []byte(data)); !errors.Is(err, oci.ErrManifestInvalid) {
		t.Fatalf("CheckManifest: %v, want ErrManifestInvalid", err)
	}
}
