package oci

import (
	"encoding/json"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest is what berth reads of any manifest or index: its type and the
// content it names. One shape covers the OCI image manifest and index,
// Docker's schema 2 manifest and manifest list, and the OCI artifact
// manifest, with image-spec's own descriptors; fields a kind has not stay
// empty. The gc, the importer and exporter, preload, prefetch and the
// referrers listing all read manifests through it.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *v1.Descriptor    `json:"config,omitempty"`
	Layers        []v1.Descriptor   `json:"layers,omitempty"`
	Blobs         []v1.Descriptor   `json:"blobs,omitempty"`     // the artifact manifest's
	Manifests     []v1.Descriptor   `json:"manifests,omitempty"` // an index's children
	Subject       *v1.Descriptor    `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// DecodeManifest reads data as a manifest or an index. It checks JSON syntax
// and field types only; CheckManifest decides whether data is a manifest
// clients can use.
func DecodeManifest(data []byte) (Manifest, error) {
	var m Manifest
	err := json.Unmarshal(data, &m)
	return m, err
}

// BlobDescriptors returns the content m names that is no manifest: its
// config, layers and blobs, in that order. Child manifests and the subject
// are not included.
func (m *Manifest) BlobDescriptors() []v1.Descriptor {
	var out []v1.Descriptor
	if m.Config != nil {
		out = append(out, *m.Config)
	}
	out = append(out, m.Layers...)
	return append(out, m.Blobs...)
}

// NamesContent reports whether m names anything: child manifests, a config,
// layers or blobs.
func (m *Manifest) NamesContent() bool {
	return m.Manifests != nil || m.Config != nil || m.Layers != nil || m.Blobs != nil
}
