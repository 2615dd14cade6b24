package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/pkg/oci"
)

var acceptManifests = strings.Join(oci.ManifestTypes, ", ")

// HeadManifest resolves req.Reference (a tag or a digest) of req.Repo with a HEAD and
// the full Accept list, and returns the manifest's descriptor. When the
// upstream's HEAD lacks Docker-Content-Digest, Content-Type or
// Content-Length, it falls back to GetManifest. Errors wrap
// oci.ErrManifestUnknown (404), oci.ErrNameUnknown, oci.ErrUnauthorized,
// oci.ErrDenied, oci.ErrTooManyRequests, oci.ErrUnavailable,
// oci.ErrDigestMismatch or oci.ErrRegistryUnknown. Safe for concurrent use.
func (c *Client) HeadManifest(ctx context.Context, req oci.Request) (oci.Descriptor, error) {
	repo, ref := req.Repo, req.Reference
	r, err := c.registry(repo)
	if err != nil {
		return oci.Descriptor{}, err
	}
	key := notFoundKey(repo, "manifest", ref)
	if err := c.absent.get(key); err != nil {
		return oci.Descriptor{}, err
	}
	resp, _, err := r.do(ctx, manifestCall("manifest_head", http.MethodHead, req))
	if err != nil {
		err = fmt.Errorf("resolve %s:%s: %w", repo, ref, err)
		c.absent.note(key, err)
		return oci.Descriptor{}, err
	}
	drain(resp.Body)
	desc := oci.Descriptor{MediaType: mediaType(resp.Header.Get("Content-Type")), Size: resp.ContentLength}
	desc.Digest, _ = digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if want, err := digest.Parse(ref); err == nil {
		if desc.Digest != "" && desc.Digest.Algorithm() == want.Algorithm() && desc.Digest != want {
			return oci.Descriptor{}, fmt.Errorf("resolve %s@%s: upstream says %s: %w", repo, ref, desc.Digest, oci.ErrDigestMismatch)
		}
		desc.Digest = want
	}
	if desc.Digest == "" || desc.Size < 0 || !isManifestType(desc.MediaType) {
		desc, _, err = c.GetManifest(ctx, req)
	}
	return desc, err
}

// GetManifest fetches req.Reference (a tag or a digest) of req.Repo with the full Accept
// list and returns its descriptor and bytes (at most oci.MaxManifestSize).
// The bytes are verified against a digest ref and against the upstream's
// Docker-Content-Digest, and must be a manifest of the media type the
// upstream declares (oci.CheckManifest). A body broken mid-way is fetched
// again from the next endpoint. Errors are those of HeadManifest, plus
// oci.ErrTooLarge and oci.ErrManifestInvalid.
// Safe for concurrent use.
func (c *Client) GetManifest(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error) {
	repo, ref := req.Repo, req.Reference
	r, err := c.registry(repo)
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	key := notFoundKey(repo, "manifest", ref)
	if err := c.absent.get(key); err != nil {
		return oci.Descriptor{}, nil, err
	}
	for attempt := 0; ; attempt++ {
		desc, b, err := r.getManifest(ctx, req)
		if err == nil || !errors.Is(err, errBodyBroken) || attempt+1 >= len(r.endpoints) || ctx.Err() != nil {
			if err != nil {
				err = fmt.Errorf("fetch %s:%s: %w", repo, ref, err)
				c.absent.note(key, err)
			}
			return desc, b, err
		}
	}
}

var errBodyBroken = errors.New("body broken")

func (r *registry) getManifest(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error) {
	ref := req.Reference
	resp, ep, err := r.do(ctx, manifestCall("manifest_get", http.MethodGet, req))
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	body := resp.Body.(*idleBody)
	body.onFail = func(err error) { r.markFailed(ep, errorKind(err), err) }
	defer body.Close()
	if resp.ContentLength > oci.MaxManifestSize {
		return oci.Descriptor{}, nil, fmt.Errorf("manifest of %d bytes: %w", resp.ContentLength, oci.ErrTooLarge)
	}
	b, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	if err != nil {
		return oci.Descriptor{}, nil, fmt.Errorf("read manifest: %w: %w", err, errBodyBroken)
	}
	if len(b) > oci.MaxManifestSize {
		return oci.Descriptor{}, nil, fmt.Errorf("manifest over %d bytes: %w", oci.MaxManifestSize, oci.ErrTooLarge)
	}
	d, err := manifestDigest(b, ref, resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return oci.Descriptor{}, nil, err
	}
	mt, err := oci.CheckManifest(resp.Header.Get("Content-Type"), b)
	if err != nil {
		r.c.metrics.UpstreamError(r.name, "invalid")
		r.c.log.Warn("upstream manifest refused", "registry", r.name, "repo", req.Repo.String(), "ref", ref, "digest", d, "err", err)
		return oci.Descriptor{}, nil, fmt.Errorf("upstream %s: %w", r.name, err)
	}
	return oci.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}, b, nil
}

// manifestDigest digests b in the algorithm of ref (a digest) or of the
// upstream's header, and checks it against both.
func manifestDigest(b []byte, ref, header string) (digest.Digest, error) {
	alg := digest.SHA256
	want, refErr := digest.Parse(ref)
	hdr, hdrErr := digest.Parse(header)
	switch {
	case refErr == nil:
		alg = want.Algorithm()
	case hdrErr == nil && hdr.Algorithm().Available():
		alg = hdr.Algorithm()
	}
	if !alg.Available() {
		return "", fmt.Errorf("digest algorithm %s: %w", alg, oci.ErrDigestInvalid)
	}
	got := alg.FromBytes(b)
	if refErr == nil && got != want {
		return "", fmt.Errorf("manifest is %s, asked for %s: %w", got, want, oci.ErrDigestMismatch)
	}
	if hdrErr == nil && hdr.Algorithm() == alg && got != hdr {
		return "", fmt.Errorf("manifest is %s, upstream says %s: %w", got, hdr, oci.ErrDigestMismatch)
	}
	return got, nil
}

func manifestCall(op, method string, req oci.Request) call {
	h := http.Header{}
	h.Set("Accept", acceptManifests)
	return call{op: op, method: method, repo: req.Repo, hops: req.Hops, path: "manifests/" + req.Reference, header: h, notFound: oci.ErrManifestUnknown}
}

// mediaType strips parameters from a Content-Type.
func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	return strings.TrimSpace(ct)
}

// isManifestType tells a manifest media type from a generic Content-Type
// (application/json, text/plain, application/octet-stream).
func isManifestType(mt string) bool {
	return slices.Contains(oci.ManifestTypes, mt) || strings.HasPrefix(mt, "application/vnd.")
}

// Get passes a GET of tags/list or referrers (req.Kind) of req.Repo, with
// rawQuery, through to the upstream. It returns the
// 200 response (body with the idle-read timeout); the caller closes it.
// Other answers are errors wrapping oci.ErrNameUnknown (tags/list 404),
// oci.ErrManifestUnknown (referrers 404), oci.ErrUnauthorized, ...
// A Link header, if any, is the upstream's own. Safe for concurrent use.
func (c *Client) Get(ctx context.Context, req oci.Request, rawQuery string) (*http.Response, error) {
	repo := req.Repo
	r, err := c.registry(repo)
	if err != nil {
		return nil, err
	}
	subpath, notFound := "tags/list", oci.ErrNameUnknown
	if req.Kind == oci.KindReferrers {
		subpath, notFound = "referrers/"+req.Digest.String(), oci.ErrManifestUnknown
	}
	resp, ep, err := r.do(ctx, call{op: "get", method: http.MethodGet, repo: repo, hops: req.Hops, path: subpath, rawQuery: rawQuery, notFound: notFound})
	if err != nil {
		return nil, fmt.Errorf("get %s/%s: %w", repo, subpath, err)
	}
	resp.Body.(*idleBody).onFail = func(err error) { r.markFailed(ep, errorKind(err), err) }
	return resp, nil
}
