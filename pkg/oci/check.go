package oci

import (
	"encoding/json"
	"fmt"
	"mime"
	"slices"
	"strings"

	"github.com/distribution/distribution/v3"
	_ "github.com/distribution/distribution/v3/manifest/ocischema" // registers the OCI manifest and index types
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// genericTypes are Content-Types that say nothing about a manifest: with
// one of them (or none) the body's own mediaType field decides.
var genericTypes = []string{"", "application/json", "text/plain", "application/octet-stream"}

// CheckManifest decides whether data is a manifest, and which: it returns
// the manifest's media type, or an error wrapping ErrManifestInvalid when
// data is no manifest (any JSON that is not one: a metadata service's
// credentials, an HTML error page) or not the manifest contentType (the
// upstream's Content-Type, parameters allowed) says it is. A generic
// Content-Type (application/json, none) defers to the body's mediaType
// field, else to its structure. Each type is parsed by distribution's own
// unmarshaller, then held to the shape every client relies on:
// schemaVersion 2, a config descriptor for an image manifest, a manifests
// list for an index, and a mediaType field (when present) equal to the type.
func CheckManifest(contentType string, data []byte) (string, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt = strings.TrimSpace(contentType)
	}
	var m struct {
		SchemaVersion *int             `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Config        *json.RawMessage `json:"config"`
		Manifests     *json.RawMessage `json:"manifests"`
		Blobs         *json.RawMessage `json:"blobs"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return "", fmt.Errorf("body is not JSON: %w", ErrManifestInvalid)
	}
	if _, err := DecodeManifest(data); err != nil { // what is stored, gc and export can read
		return "", fmt.Errorf("a field of the wrong type: %v: %w", err, ErrManifestInvalid)
	}
	if slices.Contains(genericTypes, mt) {
		mt = m.MediaType
		if mt == "" {
			mt = SniffMediaType(data)
		}
	}
	if !slices.Contains(ManifestTypes, mt) {
		return "", fmt.Errorf("media type %q is not a manifest type: %w", mt, ErrManifestInvalid)
	}
	if m.MediaType != "" && m.MediaType != mt {
		return "", fmt.Errorf("served as %s, but its mediaType is %s: %w", mt, m.MediaType, ErrManifestInvalid)
	}
	if m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return "", fmt.Errorf("%s without schemaVersion 2: %w", mt, ErrManifestInvalid)
	}
	switch {
	case IsIndex(mt):
		if m.Manifests == nil || m.Config != nil {
			return "", fmt.Errorf("%s without a manifests list: %w", mt, ErrManifestInvalid)
		}
	case mt == artifactType:
		if m.Blobs == nil && m.Manifests != nil {
			return "", fmt.Errorf("%s shaped as an index: %w", mt, ErrManifestInvalid)
		}
		return mt, nil // distribution v3 has no unmarshaller of its own for it
	default:
		if m.Manifests != nil || !validConfig(m.Config) {
			return "", fmt.Errorf("%s without a config descriptor: %w", mt, ErrManifestInvalid)
		}
	}
	if _, _, err := distribution.UnmarshalManifest(mt, data); err != nil {
		return "", fmt.Errorf("%s: %v: %w", mt, err, ErrManifestInvalid)
	}
	return mt, nil
}

const artifactType = "application/vnd.oci.artifact.manifest.v1+json"

func validConfig(raw *json.RawMessage) bool {
	if raw == nil {
		return false
	}
	var d v1.Descriptor
	if json.Unmarshal(*raw, &d) != nil || d.MediaType == "" || d.Size < 0 {
		return false
	}
	_, err := digest.Parse(d.Digest.String())
	return err == nil
}
