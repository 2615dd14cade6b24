package airgap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrIncomplete means an image's content is not all in the store or the
// archive (a layer or config is missing).
var ErrIncomplete = errors.New("content missing")

// isManifest reports whether a media type is one of a manifest or index.
func isManifest(mediaType string) bool {
	for _, t := range oci.ManifestTypes {
		if t == mediaType {
			return true
		}
	}
	return false
}

// Image is an image named for export: a repository and a tag or digest.
type Image struct {
	Repo   oci.Repo
	Tag    string        // "" when named by digest
	Digest digest.Digest // the root manifest, resolved from the store
	Ref    string        // the full reference for index.json's ref.name
}

// ParseRef parses a reference as docker writes it (alpine:3.20,
// registry.k8s.io/pause:3.10, host:5000/app@sha256:...) into a repository
// and a tag or digest; a bare name means :latest.
func ParseRef(ref string) (repo oci.Repo, tag string, d digest.Digest, err error) {
	named, err := reference.ParseNormalizedNamed(strings.TrimSpace(ref))
	if err != nil {
		return oci.Repo{}, "", "", fmt.Errorf("reference %q: %w", ref, err)
	}
	repo = oci.Repo{Registry: reference.Domain(named), Name: reference.Path(named)}
	if dg, ok := named.(reference.Digested); ok {
		return repo, "", dg.Digest(), nil
	}
	tag = "latest"
	if t, ok := named.(reference.Tagged); ok {
		tag = t.Tag()
	}
	return repo, tag, "", nil
}

// Resolve finds ref in the store: a tag through the store's cached tag
// mapping, a digest as it is. The error wraps cache.ErrNotFound when the
// store does not hold it.
func Resolve(s *cache.Store, ref string) (Image, error) {
	repo, tag, d, err := ParseRef(ref)
	if err != nil {
		return Image{}, err
	}
	img := Image{Repo: repo, Tag: tag, Digest: d}
	if tag != "" {
		t, err := s.Tag(cache.TagKey(repo.Registry, repo.Name, tag))
		if err != nil {
			return Image{}, fmt.Errorf("%s: %w", ref, err)
		}
		img.Digest, img.Ref = t.Digest, repo.String()+":"+tag
	} else {
		img.Ref = repo.String() + "@" + d.String()
	}
	if !s.Has(img.Digest) {
		return Image{}, fmt.Errorf("%s: manifest %s: %w", ref, img.Digest, cache.ErrNotFound)
	}
	return img, nil
}

// Report says what an export or import carried.
type Report struct {
	Images    int             `json:"images"`
	Manifests int             `json:"manifests"`
	Blobs     int             `json:"blobs"`
	Bytes     int64           `json:"bytes"`
	Referrers int             `json:"referrers"`         // signatures, SBOMs, attestations carried along
	Missing   []digest.Digest `json:"missing,omitempty"` // index entries (platforms) not held, left out
	Tags      []string        `json:"tags,omitempty"`    // tags recorded (import)
	Skipped   []string        `json:"skipped,omitempty"` // index.json entries without a usable name (import)
}

// exporter walks images in a store and writes them to a Writer once each.
type exporter struct {
	s        *cache.Store
	w        Writer
	log      *slog.Logger
	written  map[digest.Digest]bool
	subjects map[digest.Digest][]v1.Descriptor // subject → referrers held in the store
	index    v1.Index
	rep      Report
}

// Export writes images (with their referrers) from s to w as one OCI
// layout and finishes it. Each blob is read from the store and checked
// against its digest as it is written; a mismatch aborts the export. An
// index entry the store does not hold (a platform not preloaded) is left
// out and listed in Report.Missing; a missing config or layer fails.
func Export(ctx context.Context, s *cache.Store, images []Image, w Writer, log *slog.Logger) (Report, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &exporter{s: s, w: w, log: log, written: map[digest.Digest]bool{}, index: NewIndex()}
	rep, err := e.run(ctx, images)
	if err != nil {
		w.Abort()
		return rep, err
	}
	return rep, nil
}

func (e *exporter) run(ctx context.Context, images []Image) (Report, error) {
	if err := e.findSubjects(); err != nil {
		return e.rep, err
	}
	for _, img := range images {
		desc, err := e.manifest(ctx, img.Repo, img.Digest)
		if err != nil {
			return e.rep, fmt.Errorf("export %s: %w", img.Ref, err)
		}
		if img.Repo.Name != "" {
			desc.Annotations = map[string]string{AnnotationRefName: img.Ref}
		}
		e.index.Manifests = append(e.index.Manifests, desc)
		e.rep.Images++
	}
	return e.rep, e.w.Finish(e.index)
}

// findSubjects reads every manifest in the store once and notes those
// with a subject: the referrers (OCI 1.1) the export carries along.
func (e *exporter) findSubjects() error {
	e.subjects = map[digest.Digest][]v1.Descriptor{}
	infos, err := e.s.Infos()
	if err != nil {
		return err
	}
	for _, info := range infos {
		if !isManifest(info.MediaType) || info.Size > oci.MaxManifestSize {
			continue
		}
		subject := info.Subject // indexed at commit; read the manifest where it was not
		if subject == "" {
			// Read the file as it is: looking is no use, so no access time moves.
			data, err := os.ReadFile(e.s.BlobPath(info.Digest))
			if err != nil {
				continue
			}
			m, err := oci.DecodeManifest(data)
			if err != nil || m.Subject == nil {
				continue
			}
			subject = m.Subject.Digest
		}
		e.subjects[subject] = append(e.subjects[subject],
			v1.Descriptor{MediaType: info.MediaType, Digest: info.Digest, Size: info.Size})
	}
	return nil
}

// manifest writes manifest d, everything it references, and its
// referrers, and returns its descriptor.
func (e *exporter) manifest(ctx context.Context, repo oci.Repo, d digest.Digest) (v1.Descriptor, error) {
	if err := ctx.Err(); err != nil {
		return v1.Descriptor{}, err
	}
	data, info, err := e.s.ReadAll(d)
	if err != nil {
		return v1.Descriptor{}, err
	}
	if d.Algorithm().FromBytes(data) != d {
		return v1.Descriptor{}, fmt.Errorf("manifest %s: %w", d, oci.ErrDigestMismatch)
	}
	mt := info.MediaType
	if mt == "" {
		mt = oci.SniffMediaType(data)
	}
	desc := v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(data))}
	if e.written[d] {
		return desc, nil
	}
	m, err := oci.DecodeManifest(data)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	for _, child := range m.Manifests {
		if !e.s.Has(child.Digest) {
			e.rep.Missing = append(e.rep.Missing, child.Digest)
			e.log.Warn("index entry not in the store, left out", "digest", child.Digest, "platform", platformString(child.Platform))
			continue
		}
		if _, err := e.manifest(ctx, repo, child.Digest); err != nil {
			return v1.Descriptor{}, err
		}
	}
	for _, b := range m.BlobDescriptors() {
		if err := e.blob(b.Digest); err != nil {
			return v1.Descriptor{}, err
		}
	}
	if err := e.w.Blob(d, int64(len(data)), strings.NewReader(string(data))); err != nil {
		return v1.Descriptor{}, fmt.Errorf("write %s: %w", d, err)
	}
	e.written[d] = true
	e.rep.Manifests++
	e.rep.Bytes += int64(len(data))
	return desc, e.referrers(ctx, repo, d)
}

// referrers writes what refers to subject: OCI 1.1 referrers held in the
// store and manifests under the tag schema (sha256-<hex>, cosign's
// sha256-<hex>.sig, .att, .sbom) in repo. Tagged ones enter index.json
// under their tag, so an import records it again.
func (e *exporter) referrers(ctx context.Context, repo oci.Repo, subject digest.Digest) error {
	prefix := cache.TagKey(repo.Registry, repo.Name, subject.Algorithm().String()+"-"+subject.Encoded())
	tags, err := e.s.TagsWithPrefix(prefix)
	if err != nil {
		return err
	}
	for _, key := range slices.Sorted(maps.Keys(tags)) {
		t := tags[key]
		if e.written[t.Digest] || !e.s.Has(t.Digest) {
			continue
		}
		desc, err := e.manifest(ctx, repo, t.Digest)
		if err != nil {
			return fmt.Errorf("referrer %s: %w", key, err)
		}
		desc.Annotations = map[string]string{AnnotationRefName: key}
		e.index.Manifests = append(e.index.Manifests, desc)
		e.rep.Referrers++
	}
	for _, r := range e.subjects[subject] {
		if e.written[r.Digest] {
			continue
		}
		if _, err := e.manifest(ctx, repo, r.Digest); err != nil {
			return fmt.Errorf("referrer %s: %w", r.Digest, err)
		}
		if repo.Name != "" { // named by digest in its subject's repository
			r.Annotations = map[string]string{AnnotationRefName: repo.String() + "@" + r.Digest.String()}
		}
		e.index.Manifests = append(e.index.Manifests, r)
		e.rep.Referrers++
	}
	return nil
}

// blob writes committed content d, checking its bytes as they go.
func (e *exporter) blob(d digest.Digest) error {
	if e.written[d] {
		return nil
	}
	f, size, err := e.s.Open(d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d, errors.Join(ErrIncomplete, err))
	}
	defer f.Close()
	v := d.Verifier()
	if err := e.w.Blob(d, size, io.TeeReader(f, v)); err != nil {
		return fmt.Errorf("write %s: %w", d, err)
	}
	if !v.Verified() {
		return fmt.Errorf("blob %s in the store: %w (run berth verify)", d, oci.ErrDigestMismatch)
	}
	e.written[d] = true
	e.rep.Blobs++
	e.rep.Bytes += size
	return nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
