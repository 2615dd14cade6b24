package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/containerd/platforms"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// pinFunc pins an image's root manifest d, named ref.
type pinFunc func(ctx context.Context, ref string, d digest.Digest) error

// preloader walks images through berth's own API, so the server stays the
// store's one writer and every byte is verified on both ends.
type preloader struct {
	base      string // the berth pulled through
	client    *http.Client
	match     platforms.Matcher // nil: every platform
	referrers bool
	parallel  int
	pin       pinFunc // nil: no pinning
	rep       *reporter

	mu   sync.Mutex                   // guards seen
	seen map[digest.Digest]*blobFetch // blobs shared by images go once
}

// blobFetch is one blob download, shared by the images that need it.
type blobFetch struct {
	once sync.Once
	err  error
}

// imagePlan is what one image needs: its manifests (fetched while
// planning) and blobs, and the roots to pin.
type imagePlan struct {
	ref       string
	repo      oci.Repo
	root      digest.Digest
	manifests int
	blobs     []v1.Descriptor
	pins      []digest.Digest // the root: its pin keeps the referrers too
	referrers int
	seen      map[digest.Digest]bool
}

// result is the outcome of one image.
type result struct {
	ref  string
	plan *imagePlan
	err  error
}

// ociReferenceType is the annotation buildx puts on an index's
// attestation manifests, naming the platform manifest they describe.
const (
	dockerRefType   = "vnd.docker.reference.type"
	dockerRefDigest = "vnd.docker.reference.digest"
)

// run plans every image (fetching its manifests), then fetches every blob
// with a bounded number at once, then pins. An image whose manifests or
// blobs fail is reported and the others go on.
func (p *preloader) run(ctx context.Context, refs []string) []result {
	p.seen = map[digest.Digest]*blobFetch{}
	results := make([]result, len(refs))
	var total int64
	for i, ref := range refs {
		plan, err := p.plan(ctx, ref)
		results[i] = result{ref: ref, plan: plan, err: err}
		if err != nil {
			p.rep.failed(ref, err)
			continue
		}
		for _, b := range plan.blobs {
			total += b.Size
		}
	}
	p.rep.start(total)
	for i := range results {
		if results[i].err != nil {
			continue
		}
		plan := results[i].plan
		err := p.fetchBlobs(ctx, plan)
		if err == nil {
			err = p.pinAll(ctx, plan)
		}
		results[i].err = err
		if err != nil {
			p.rep.failed(plan.ref, err)
		} else {
			p.rep.done(plan)
		}
	}
	return results
}

// plan resolves ref and walks its manifests.
func (p *preloader) plan(ctx context.Context, ref string) (*imagePlan, error) {
	repo, tag, d, err := airgap.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	plan := &imagePlan{ref: ref, repo: repo, seen: map[digest.Digest]bool{}}
	name := tag
	if d != "" {
		name = d.String()
	}
	root, err := p.manifest(ctx, plan, name, d, true)
	if err != nil {
		return nil, err
	}
	plan.root = root
	plan.pins = []digest.Digest{root}
	return plan, nil
}

// manifest fetches manifest ref (checked against want when set), walks
// what it names and, for top-level images, their referrers; it returns
// the manifest's digest.
func (p *preloader) manifest(ctx context.Context, plan *imagePlan, ref string, want digest.Digest, filter bool) (digest.Digest, error) {
	data, err := p.getManifest(ctx, plan.repo, ref)
	if err != nil {
		return "", err
	}
	d := digest.FromBytes(data)
	if want != "" && want.Algorithm().FromBytes(data) != want {
		return "", fmt.Errorf("manifest %s: %w", want, oci.ErrDigestMismatch)
	}
	if want != "" {
		d = want
	}
	if plan.seen[d] {
		return d, nil
	}
	plan.seen[d] = true
	plan.manifests++
	m, err := oci.DecodeManifest(data)
	if err != nil {
		return "", fmt.Errorf("manifest %s: %w", ref, err)
	}
	for _, child := range p.selected(m.Manifests, filter) {
		if _, err := p.manifest(ctx, plan, child.Digest.String(), child.Digest, filter); err != nil {
			return "", err
		}
	}
	for _, b := range m.BlobDescriptors() {
		if !plan.seen[b.Digest] {
			plan.seen[b.Digest] = true
			plan.blobs = append(plan.blobs, b)
		}
	}
	if p.referrers && filter {
		if err := p.findReferrers(ctx, plan, d); err != nil {
			return "", err
		}
	}
	return d, nil
}

// selected returns the index entries to preload: those of the wanted
// platforms (and the attestation manifests describing them), or all.
func (p *preloader) selected(children []v1.Descriptor, filter bool) []v1.Descriptor {
	if p.match == nil || !filter {
		return children
	}
	var out []v1.Descriptor
	keep := map[string]bool{}
	for _, c := range children {
		// An entry without a platform (an artifact's) belongs to every platform.
		if c.Annotations[dockerRefType] == "" && (c.Platform == nil || p.match.Match(*c.Platform)) {
			out = append(out, c)
			keep[c.Digest.String()] = true
		}
	}
	for _, c := range children {
		if c.Annotations[dockerRefType] == "attestation-manifest" && keep[c.Annotations[dockerRefDigest]] {
			out = append(out, c)
		}
	}
	return out
}

// findReferrers walks what refers to subject: the referrers API, else the
// referrers tag schema (sha256-<hex>, an index of them), and cosign's
// sha256-<hex>.sig, .att and .sbom tags. Absent ones are no error.
func (p *preloader) findReferrers(ctx context.Context, plan *imagePlan, subject digest.Digest) error {
	var found []digest.Digest
	idx, err := p.getReferrers(ctx, plan.repo, subject)
	if err != nil { // an upstream away, say: what the store holds still goes
		p.rep.warn(plan.ref, err)
	}
	schemaTag := subject.Algorithm().String() + "-" + subject.Encoded()
	if idx == nil { // no referrers API: the tag schema
		data, err := p.getManifest(ctx, plan.repo, schemaTag)
		if err != nil && !errors.Is(err, errNotFound) {
			p.rep.warn(plan.ref, fmt.Errorf("referrers of %s: %w", subject, err))
		}
		if err == nil {
			idx = &v1.Index{}
			if json.Unmarshal(data, idx) != nil {
				idx = nil
			}
		}
	}
	if idx != nil {
		for _, r := range idx.Manifests {
			found = append(found, r.Digest)
		}
	}
	for _, r := range found {
		if plan.seen[r] {
			continue
		}
		if _, err := p.manifest(ctx, plan, r.String(), r, false); err != nil {
			return fmt.Errorf("referrer %s of %s: %w", r, subject, err)
		}
		plan.referrers++
	}
	for _, suffix := range []string{".sig", ".att", ".sbom"} {
		_, err := p.manifest(ctx, plan, schemaTag+suffix, "", false)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			p.rep.warn(plan.ref, fmt.Errorf("%s%s: %w", schemaTag, suffix, err))
			continue
		}
		plan.referrers++
	}
	return nil
}

// errNotFound is what a 404 from berth wraps (notFound).
var errNotFound = errors.New("not found")

type notFound struct{ error }

func (notFound) Is(target error) bool { return target == errNotFound }
func (e notFound) Unwrap() error      { return e.error }

// getReferrers asks berth for subject's referrers; nil when the upstream
// has no referrers API (404).
func (p *preloader) getReferrers(ctx context.Context, repo oci.Repo, subject digest.Digest) (*v1.Index, error) {
	body, err := p.get(ctx, repo, "referrers/"+subject.String(), v1.MediaTypeImageIndex)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	defer body.Close()
	var idx v1.Index
	if err := json.NewDecoder(io.LimitReader(body, oci.MaxManifestSize)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("referrers of %s: %w", subject, err)
	}
	return &idx, nil
}

func (p *preloader) getManifest(ctx context.Context, repo oci.Repo, ref string) ([]byte, error) {
	body, err := p.get(ctx, repo, "manifests/"+ref, strings.Join(oci.ManifestTypes, ", "))
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", ref, err)
	}
	if len(data) > oci.MaxManifestSize {
		return nil, fmt.Errorf("manifest %s: %w", ref, oci.ErrTooLarge)
	}
	return data, nil
}

// fetchBlobs reads every blob of plan through berth, at most p.parallel
// at once; blobs another image fetched already are not read again.
func (p *preloader) fetchBlobs(ctx context.Context, plan *imagePlan) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(p.parallel)
	for _, b := range plan.blobs {
		p.mu.Lock()
		f, ok := p.seen[b.Digest]
		if !ok {
			f = &blobFetch{}
			p.seen[b.Digest] = f
		}
		p.mu.Unlock()
		g.Go(func() error {
			f.once.Do(func() { f.err = p.blob(gctx, plan.repo, b) })
			return f.err
		})
	}
	return g.Wait()
}

// pinAll pins the image's root and its referrers.
func (p *preloader) pinAll(ctx context.Context, plan *imagePlan) error {
	if p.pin == nil {
		return nil
	}
	for _, d := range plan.pins {
		if err := p.pin(ctx, plan.ref, d); err != nil {
			return err
		}
	}
	return nil
}

// blob reads blob b through berth and checks it against its digest.
func (p *preloader) blob(ctx context.Context, repo oci.Repo, b v1.Descriptor) error {
	body, err := p.get(ctx, repo, "blobs/"+b.Digest.String(), "")
	if err != nil {
		return err
	}
	defer body.Close()
	v := b.Digest.Verifier()
	n, err := io.Copy(io.MultiWriter(v, p.rep.counter()), body)
	if err != nil {
		return fmt.Errorf("blob %s: %w", b.Digest, err)
	}
	if !v.Verified() || n != b.Size {
		return fmt.Errorf("blob %s: %w", b.Digest, oci.ErrDigestMismatch)
	}
	p.rep.blob(n)
	return nil
}

// get asks berth for /v2/<name>/<subpath>, routed to the repository's
// registry with ns, as containerd does. A 404 wraps errNotFound.
func (p *preloader) get(ctx context.Context, repo oci.Repo, subpath, accept string) (io.ReadCloser, error) {
	u := p.base + "/v2/" + repo.Name + "/" + subpath + "?ns=" + url.QueryEscape(repo.Registry)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		err := fmt.Errorf("GET %s: %s: %s", subpath, resp.Status, errcodeMessage(msg))
		if resp.StatusCode == http.StatusNotFound {
			err = notFound{err}
		}
		return nil, err
	}
	return resp.Body, nil
}
