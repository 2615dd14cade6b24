package oci

import (
	"errors"
	"testing"
)

func TestCheckManifest(t *testing.T) {
	t.Parallel()
	const (
		ociManifest    = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
		bareManifest   = `{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
		dockerManifest = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
		ociIndex       = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
		dockerList     = `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`
		creds          = `{"Code":"Success","AccessKeyId":"AKIA","SecretAccessKey":"x"}`
	)
	for _, c := range []struct {
		name, ct, body, want string // want "" means refused
	}{
		{"oci manifest", "application/vnd.oci.image.manifest.v1+json", ociManifest, "application/vnd.oci.image.manifest.v1+json"},
		{"with parameters", "application/vnd.oci.image.manifest.v1+json; charset=utf-8", ociManifest, "application/vnd.oci.image.manifest.v1+json"},
		{"without its own mediaType", "application/vnd.oci.image.manifest.v1+json", bareManifest, "application/vnd.oci.image.manifest.v1+json"},
		{"generic type, field decides", "application/json", dockerManifest, "application/vnd.docker.distribution.manifest.v2+json"},
		{"no type, shape decides", "", bareManifest, "application/vnd.oci.image.manifest.v1+json"},
		{"docker manifest", "application/vnd.docker.distribution.manifest.v2+json", dockerManifest, "application/vnd.docker.distribution.manifest.v2+json"},
		{"oci index", "application/vnd.oci.image.index.v1+json", ociIndex, "application/vnd.oci.image.index.v1+json"},
		{"docker list", "application/vnd.docker.distribution.manifest.list.v2+json", dockerList, "application/vnd.docker.distribution.manifest.list.v2+json"},
		{"credentials as json", "application/json", creds, ""},
		{"credentials as a manifest", "application/vnd.oci.image.manifest.v1+json", creds, ""},
		{"credentials as an index", "application/vnd.oci.image.index.v1+json", creds, ""},
		{"manifest as an index", "application/vnd.oci.image.index.v1+json", ociManifest, ""},
		{"index as a manifest", "application/vnd.oci.image.manifest.v1+json", ociIndex, ""},
		{"docker manifest as oci", "application/vnd.oci.image.manifest.v1+json", dockerManifest, ""},
		{"html", "text/html", "<html>login</html>", ""},
		{"not json", "application/vnd.oci.image.manifest.v1+json", "\x00\x01", ""},
		{"schema 1", "application/json", `{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}`, ""},
		{"layer type", "application/vnd.oci.image.layer.v1.tar+gzip", ociManifest, ""},
	} {
		got, err := CheckManifest(c.ct, []byte(c.body))
		switch {
		case c.want == "" && (err == nil || !errors.Is(err, ErrManifestInvalid) || !errors.Is(err, ErrBadUpstream)):
			t.Errorf("%s: got %q, %v; want ErrManifestInvalid", c.name, got, err)
		case c.want != "" && (err != nil || got != c.want):
			t.Errorf("%s: got %q, %v; want %s", c.name, got, err, c.want)
		}
	}
}
