package registry

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/containerd/platforms"
	"github.com/distribution/distribution/v3/manifest/manifestlist"
	"github.com/distribution/distribution/v3/manifest/schema2"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifest serves GET and HEAD /v2/<name>/manifests/<reference>. Headers
// are exact on HEAD too: containerd resolves tags with HEAD alone.
func (h *Handler) manifest(w http.ResponseWriter, r *http.Request, rq oci.Request) error {
	man, err := h.mirror.Manifest(r.Context(), rq)
	if err != nil {
		return err
	}
	if man, err = h.negotiate(r, rq, man); err != nil {
		return err
	}
	hd := w.Header()
	// Canonical keys set directly: Set would canonicalize them per request.
	hd["Content-Type"] = []string{man.MediaType}
	hd["Docker-Content-Digest"] = []string{man.Digest.String()}
	hd["Etag"] = []string{`"` + man.Digest.String() + `"`}
	if man.Data == nil { // HEAD answered from a tag mapping alone
		if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, man.Digest.String()) {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		hd.Set("Content-Length", strconv.FormatInt(man.Size, 10))
		w.WriteHeader(http.StatusOK)
		h.served(w, rq, man)
		return nil
	}
	if plain(r) {
		// What ServeContent answers to a request without Range or
		// conditions, without its seeks, copies and header parsing.
		hd["Accept-Ranges"] = acceptBytes
		hd["Content-Length"] = []string{strconv.Itoa(len(man.Data))}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(man.Data)
		}
	} else {
		serveContent(w, r, bytes.NewReader(man.Data))
	}
	h.served(w, rq, man)
	return nil
}

// plain reports whether r has none of the headers that make ServeContent
// answer other than 200 with the whole content: Range and the
// conditionals.
func plain(r *http.Request) bool {
	for _, k := range [...]string{"Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		if _, ok := r.Header[k]; ok {
			return false
		}
	}
	return true
}

// served records a manifest answer that succeeded: a GET is a pull (the
// pull metric) and is audited; a HEAD by tag is audited too, as the tag's
// resolution (containerd resolves tags with HEAD only, then GETs by
// digest); a HEAD by digest, a 304 and every error are neither.
func (h *Handler) served(w http.ResponseWriter, rq oci.Request, man mirror.Manifest) {
	sw, ok := w.(*statusWriter)
	if !ok || sw.status != http.StatusOK || rq.Via != oci.ViaClient {
		return
	}
	tag := rq.Reference
	if rq.Digest != "" || tag == man.Digest.String() {
		tag = ""
	}
	if !rq.Head {
		h.m.Pull(rq.Repo.Registry, rq.Repo.Name)
	}
	if !rq.Head || tag != "" {
		h.mirror.Served(rq.Repo, tag, man.Digest, false)
	}
}

// negotiate applies the client's Accept headers as distribution's registry
// v3 does: an OCI image manifest only goes to clients that list its type;
// a Docker manifest list asked for by tag by a client that cannot read one
// is answered with its linux/amd64 image (old Docker clients); an OCI index
// goes to anyone (distribution v3 serves it whatever the Accept). One
// leniency: */* accepts anything.
func (h *Handler) negotiate(r *http.Request, rq oci.Request, man mirror.Manifest) (mirror.Manifest, error) {
	switch mt := man.MediaType; {
	case accepts(r, mt):
		return man, nil
	case mt == v1.MediaTypeImageManifest:
		return man, fmt.Errorf("OCI manifest found, but accept header does not support OCI manifests: %w", oci.ErrManifestUnknown)
	case mt == manifestlist.MediaTypeManifestList && rq.Digest == "":
		child, err := h.platformManifest(r.Context(), rq, man)
		if err == nil && child.MediaType == schema2.MediaTypeManifest && !accepts(r, child.MediaType) {
			return man, fmt.Errorf("schema 2 manifest not supported by client: %w", oci.ErrManifestUnknown)
		}
		return child, err
	}
	return man, nil // other types (schema 2, artifacts) go to any client
}

// accepts reports whether the request's Accept headers list mediaType or
// */*.
func accepts(r *http.Request, mediaType string) bool {
	for _, v := range r.Header["Accept"] {
		for part := range strings.SplitSeq(v, ",") {
			part = strings.TrimSpace(part)
			if !strings.Contains(part, ";") {
				// No parameters: ParseMediaType would only lower-case it
				// (and refuse what differs from mediaType and */* anyway).
				if strings.EqualFold(part, mediaType) || part == "*/*" {
					return true
				}
				continue
			}
			mt, _, err := mime.ParseMediaType(part)
			if err == nil && (mt == mediaType || mt == "*/*") {
				return true
			}
		}
	}
	return false
}

// oldDockerPlatform is what a Docker client too old for manifest lists
// runs on, as distribution assumes: linux/amd64, no other variant.
var oldDockerPlatform = platforms.OnlyStrict(v1.Platform{OS: "linux", Architecture: "amd64"})

// platformManifest picks the linux/amd64 entry of an index.
func (h *Handler) platformManifest(ctx context.Context, rq oci.Request, index mirror.Manifest) (mirror.Manifest, error) {
	if index.Data == nil {
		whole := rq.WithReference(index.Digest.String())
		whole.Head = false
		full, err := h.mirror.Manifest(ctx, whole)
		if err != nil {
			return mirror.Manifest{}, err
		}
		index = full
	}
	idx, err := oci.DecodeManifest(index.Data)
	if err != nil {
		return mirror.Manifest{}, fmt.Errorf("index %s: %v: %w", index.Digest, err, oci.ErrManifestUnknown)
	}
	for _, m := range idx.Manifests {
		if m.Platform != nil && oldDockerPlatform.Match(*m.Platform) {
			return h.mirror.Manifest(ctx, rq.WithReference(m.Digest.String()))
		}
	}
	return mirror.Manifest{}, fmt.Errorf("index %s has no linux/amd64 image for a client that accepts no index: %w", index.Digest, oci.ErrManifestUnknown)
}
