package airgap

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotLayout means an archive is neither an OCI layout nor a docker save.
var ErrNotLayout = errors.New("neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")

// ImportOptions tunes an import. The zero value pins what it imports.
type ImportOptions struct {
	// Repo names the repository of index.json entries whose name is a bare
	// tag (as skopeo's oci:DIR:TAG writes it); without it such entries are
	// imported and pinned but not tagged.
	Repo  oci.Repo
	NoPin bool         // import without pinning
	Log   *slog.Logger // nil discards
}

// importer stages an archive's files, checks the whole, then commits.
type importer struct {
	s      *cache.Store
	o      ImportOptions
	staged map[digest.Digest]*cache.Staged // every blob staged, verified against its digest
	named  map[string]*cache.Staged        // docker save files by name (layer.tar)
	files  map[string][]byte               // small metadata files by name (index.json, manifest.json, configs)
	plan   []planned                       // what to commit, children before parents
	inPlan map[digest.Digest]bool
	tags   map[string]cache.Tag
	pins   []cache.Pin              // one per image index.json names, by its name
	roots  []root                   // the images whose names say their repository
	types  map[digest.Digest]string // media types of the planned manifests
	rep    Report
}

// root is an image of the archive and the repository its name puts it in.
type root struct {
	repo oci.Repo
	d    digest.Digest
}

type planned struct {
	st        *cache.Staged
	mediaType string
}

// ImportTar imports an OCI layout tar (oci-archive) or a docker save tar
// from r into s. It verifies every blob while it stages it in the store's
// tmp/, checks that each image is whole, and only then commits the blobs,
// pins them (unless NoPin), and records the tags in one transaction. A
// tampered or truncated archive fails with the digest named and leaves
// the store as it was. Import may run while the store serves; running it
// again is harmless.
func ImportTar(ctx context.Context, s *cache.Store, r io.Reader, o ImportOptions) (Report, error) {
	im := newImporter(s, o)
	defer im.discard()
	r, err := gunzipped(r)
	if err != nil {
		return im.rep, err
	}
	if err := walkTar(ctxReader{ctx, r}, im.entry); err != nil {
		return im.rep, err
	}
	return im.finish()
}

// gunzipped returns r, decompressed when it starts as gzip does (a
// docker save piped through gzip).
func gunzipped(r io.Reader) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if magic, err := br.Peek(2); err == nil && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		return zr, nil
	}
	return br, nil
}

// ImportDir imports an OCI layout directory, as ImportTar does.
func ImportDir(ctx context.Context, s *cache.Store, dir string, o ImportOptions) (Report, error) {
	im := newImporter(s, o)
	defer im.discard()
	err := walkDir(dir, func(e entry) error {
		e.r = ctxReader{ctx, e.r}
		return im.entry(e)
	})
	if err != nil {
		return im.rep, err
	}
	return im.finish()
}

func newImporter(s *cache.Store, o ImportOptions) *importer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &importer{s: s, o: o, staged: map[digest.Digest]*cache.Staged{}, named: map[string]*cache.Staged{},
		files: map[string][]byte{}, inPlan: map[digest.Digest]bool{}, tags: map[string]cache.Tag{},
		types: map[digest.Digest]string{}}
}

// entry stages one file of the archive: a blob under its digest, a small
// metadata file in memory, anything else (a docker save layer) under a
// digest computed from its bytes.
func (im *importer) entry(e entry) error {
	if rest, ok := strings.CutPrefix(e.name, "blobs/"); ok {
		alg, hex, _ := strings.Cut(rest, "/")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%s: not a blob name: %w", e.name, oci.ErrDigestInvalid)
		}
		st, err := im.s.Stage(e.r, d, e.size)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		im.named[e.name] = im.keep(st)
		return nil
	}
	if strings.HasSuffix(e.name, ".json") || e.name == v1.ImageLayoutFile || e.name == "repositories" {
		if e.size > oci.MaxManifestSize {
			return fmt.Errorf("%s: %d bytes: %w", e.name, e.size, oci.ErrTooLarge)
		}
		data, err := io.ReadAll(io.LimitReader(e.r, oci.MaxManifestSize+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", e.name, err)
		}
		im.files[e.name] = data
		return nil
	}
	if strings.HasSuffix(e.name, "/json") || strings.HasSuffix(e.name, "/VERSION") {
		return nil // docker save's per-layer legacy metadata
	}
	st, err := im.s.Stage(e.r, "", e.size)
	if err != nil {
		return fmt.Errorf("import %s: %w", e.name, err)
	}
	im.named[e.name] = im.keep(st)
	return nil
}

// keep records a staged blob and returns the one to use: the first
// staged under its digest (an archive may carry the same bytes twice, as
// docker save does for identical layers).
func (im *importer) keep(st *cache.Staged) *cache.Staged {
	if old, ok := im.staged[st.Digest]; ok {
		st.Discard()
		return old
	}
	im.staged[st.Digest] = st
	return st
}

// finish checks the staged archive and commits it.
func (im *importer) finish() (Report, error) {
	var err error
	switch {
	case im.files[v1.ImageIndexFile] != nil:
		err = im.planLayout()
	case im.files["manifest.json"] != nil:
		err = im.planDockerSave()
	default:
		err = ErrNotLayout
	}
	if err != nil {
		return im.rep, fmt.Errorf("import: %w", err)
	}
	return im.rep, im.commit()
}

// planLayout walks index.json and plans every image it names.
func (im *importer) planLayout() error {
	var idx v1.Index
	if err := json.Unmarshal(im.files[v1.ImageIndexFile], &idx); err != nil {
		return fmt.Errorf("index.json: %w", err)
	}
	for _, desc := range idx.Manifests {
		if err := im.planManifest(desc, false); err != nil {
			return err
		}
		im.rep.Images++
		im.tag(desc)
	}
	return nil
}

// tag records the name index.json gives an image (containerd's full
// image name, else ref.name when it is a full reference, else ref.name as
// a tag of ImportOptions.Repo) and the pin that keeps it, named so.
func (im *importer) tag(desc v1.Descriptor) {
	pin := cache.Pin{Ref: desc.Digest.String(), Digest: desc.Digest, Source: "import"}
	var named oci.Repo // the repository the name puts the image in, if any
	defer func() {
		im.pins = append(im.pins, pin)
		if named.Name != "" {
			im.roots = append(im.roots, root{named, desc.Digest})
		}
	}()
	name := desc.Annotations[annotationImageName]
	if name == "" {
		name = desc.Annotations[AnnotationRefName]
	}
	if name == "" {
		return
	}
	repo, tag := im.o.Repo, name
	if strings.Contains(name, "/") {
		var err error
		if repo, tag, _, err = ParseRef(name); err != nil {
			tag = ""
		} else if tag == "" {
			pin.Ref = repo.String() + "@" + desc.Digest.String() // named by digest: no tag
			named = repo
			return
		}
	} else if repo.Name == "" || !oci.ValidTag(name) {
		tag = ""
	}
	if tag == "" {
		im.rep.Skipped = append(im.rep.Skipped, name)
		im.o.Log.Warn("index.json entry names no repository: imported without a tag (pass --repo)", "name", name, "digest", desc.Digest)
		return
	}
	named = repo
	key := cache.TagKey(repo.Registry, repo.Name, tag)
	im.tags[key] = cache.Tag{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Checked: time.Now()}
	im.rep.Tags = append(im.rep.Tags, key)
	pin.Ref, pin.Tag = key, key
}

// planManifest checks that manifest desc and what it references are
// staged with their descriptors' sizes, and plans them children first. An
// index entry not carried (a platform left out) is allowed and reported;
// any other missing content fails.
func (im *importer) planManifest(desc v1.Descriptor, optional bool) error {
	st, err := im.need(desc)
	if err != nil {
		if optional && errors.Is(err, ErrIncomplete) {
			im.rep.Missing = append(im.rep.Missing, desc.Digest)
			return nil
		}
		return err
	}
	if im.inPlan[desc.Digest] {
		return nil
	}
	data, err := readStaged(st)
	if err != nil {
		return err
	}
	m, err := oci.DecodeManifest(data)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	mt := desc.MediaType
	if mt == "" || !isManifest(mt) {
		mt = oci.SniffMediaType(data)
	}
	for _, child := range m.Manifests {
		if err := im.planManifest(child, true); err != nil {
			return err
		}
	}
	for _, b := range m.BlobDescriptors() {
		bst, err := im.need(b)
		if err != nil {
			return fmt.Errorf("image %s: %w", desc.Digest, err)
		}
		im.add(bst, "")
	}
	im.add(st, mt)
	im.rep.Manifests++
	return nil
}

// need returns the staged blob desc names, checked against its size.
func (im *importer) need(desc v1.Descriptor) (*cache.Staged, error) {
	st, ok := im.staged[desc.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s: not in the archive: %w", desc.Digest, ErrIncomplete)
	}
	if desc.Size != st.Size {
		return nil, fmt.Errorf("blob %s: %d bytes, descriptor says %d: %w", desc.Digest, st.Size, desc.Size, oci.ErrDigestMismatch)
	}
	return st, nil
}

func (im *importer) add(st *cache.Staged, mediaType string) {
	if im.inPlan[st.Digest] {
		return
	}
	im.inPlan[st.Digest] = true
	im.plan = append(im.plan, planned{st, mediaType})
	if mediaType != "" {
		im.types[st.Digest] = mediaType
	}
	if mediaType == "" {
		im.rep.Blobs++
	}
	im.rep.Bytes += st.Size
}

// commit links every planned blob into place (children before the
// manifests that name them), pins each image under its name (a pin keeps
// the whole image and its referrers), then records the tags in one
// transaction. A kill part way leaves verified content and, at worst, no
// tags: running the import again completes it.
func (im *importer) commit() error {
	for _, p := range im.plan {
		if err := p.st.Commit(p.mediaType); err != nil {
			return err
		}
		delete(im.staged, p.st.Digest)
	}
	// The content belongs to the repositories the archive names it in:
	// berth serves it there (and only there) as if their upstream had.
	for _, r := range im.roots {
		set := map[digest.Digest]bool{}
		im.reach(r.d, set, 0)
		ds := make([]digest.Digest, 0, len(set))
		for d := range set {
			ds = append(ds, d)
		}
		if err := im.s.MarkKnown(r.repo, ds...); err != nil {
			return fmt.Errorf("import: record %s's content: %w", r.repo, err)
		}
	}
	if !im.o.NoPin {
		for _, p := range im.pins {
			if _, err := im.s.AddPin(p); err != nil {
				return err
			}
		}
	}
	return im.s.SetTags(im.tags)
}

// reach adds d and what the planned manifest d names to set.
func (im *importer) reach(d digest.Digest, set map[digest.Digest]bool, depth int) {
	if set[d] || !im.inPlan[d] || depth > 8 {
		return
	}
	set[d] = true
	if im.types[d] == "" {
		return // a blob
	}
	data, err := os.ReadFile(im.s.BlobPath(d)) // committed by now
	if err != nil {
		return
	}
	m, err := oci.DecodeManifest(data)
	if err != nil {
		return
	}
	for _, c := range m.Manifests {
		im.reach(c.Digest, set, depth+1)
	}
	for _, b := range m.BlobDescriptors() {
		im.reach(b.Digest, set, depth+1)
	}
}

// discard removes whatever staged file was not committed.
func (im *importer) discard() {
	for _, st := range im.staged {
		st.Discard()
	}
}

func readStaged(st *cache.Staged) ([]byte, error) {
	if st.Size > oci.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s: %d bytes: %w", st.Digest, st.Size, oci.ErrTooLarge)
	}
	f, err := st.Open()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
