package oci

import (
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/schema2"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types berth asks upstreams for, most specific first. An
// artifact manifest (Helm chart, signature) is an OCI image manifest with an
// artifactType, so these cover every OCI artifact.
var ManifestTypes = []string{
	v1.MediaTypeImageIndex,
	v1.MediaTypeImageManifest,
	manifestlist.MediaTypeManifestList,
	schema2.MediaTypeManifest,
	"application/vnd.oci.artifact.manifest.v1+json",
}

// MaxManifestSize bounds a manifest read into memory (distribution's limit).
const MaxManifestSize = 4 << 20

// IsIndex reports whether a media type is a multi-platform index.
func IsIndex(mediaType string) bool {
	return mediaType == v1.MediaTypeImageIndex || mediaType == manifestlist.MediaTypeManifestList
}

// SniffMediaType reads a manifest's own mediaType field, for an upstream
// that sent no Content-Type. An OCI manifest without one is an image
// manifest, or an index when it has manifests.
func SniffMediaType(data []byte) string {
	m, err := DecodeManifest(data)
	if err == nil && m.MediaType != "" {
		return m.MediaType
	}
	if m.Manifests != nil {
		return v1.MediaTypeImageIndex
	}
	return v1.MediaTypeImageManifest
}
