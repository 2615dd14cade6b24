package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/berth-registry/berth/pkg/oci"
)

// FetchBlob returns the bytes of blob req.Digest of req.Repo from offset on, and the
// blob's total size (-1 if the upstream does not say). The bytes are
// unverified: the caller hashes them. A stream broken mid-way returns an
// error wrapping oci.ErrUnavailable from Read and puts its endpoint into
// back-off; the caller resumes by calling FetchBlob again with the offset
// it reached (Range: bytes=offset-; an upstream that ignores Range and
// answers 200 has the first offset bytes skipped). Redirects (to object
// storage) are followed without the registry's Authorization. Errors wrap
// oci.ErrBlobUnknown (404), oci.ErrUnauthorized, oci.ErrDenied,
// oci.ErrTooManyRequests, oci.ErrUnavailable or oci.ErrRegistryUnknown.
// Safe for concurrent use; the caller closes the body.
func (c *Client) FetchBlob(ctx context.Context, req oci.Request, offset int64) (io.ReadCloser, int64, error) {
	return c.fetchBlob(ctx, req, offset, -1)
}

// FetchBlobRange returns bytes [offset, end) of blob req.Digest (Range:
// bytes=offset-(end-1)), and the blob's total size, as FetchBlob does: a
// cluster node fetching the stripe it is the root of. An upstream that
// ignores Range sends the rest of the blob from offset on; the caller
// reads only what it asked for.
func (c *Client) FetchBlobRange(ctx context.Context, req oci.Request, offset, end int64) (io.ReadCloser, int64, error) {
	if offset < 0 || end <= offset {
		return nil, 0, fmt.Errorf("fetch %s: range %d-%d: %w", req.Digest, offset, end, oci.ErrUnavailable)
	}
	return c.fetchBlob(ctx, req, offset, end)
}

func (c *Client) fetchBlob(ctx context.Context, req oci.Request, offset, end int64) (io.ReadCloser, int64, error) {
	repo, d := req.Repo, req.Digest
	r, err := c.registry(repo)
	if err != nil {
		return nil, 0, err
	}
	key := notFoundKey(repo, "blob", d.String())
	if err := c.absent.get(key); err != nil {
		return nil, 0, err
	}
	h := http.Header{}
	switch {
	case end > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, end-1))
	case offset > 0:
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	cl := call{op: "blob", method: http.MethodGet, repo: repo, hops: req.Hops, path: "blobs/" + d.String(), header: h, notFound: oci.ErrBlobUnknown}
	resp, ep, err := r.do(ctx, cl)
	var ue *Error
	if offset > 0 && errors.As(err, &ue) && ue.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		// Some registries (go-containerregistry's) take no open-ended
		// Range: ask for the whole blob and skip to offset.
		cl.header = nil
		resp, ep, err = r.do(ctx, cl)
	}
	if err != nil {
		err = fmt.Errorf("fetch %s: %w", d, err)
		c.absent.note(key, err)
		return nil, 0, err
	}
	body := resp.Body.(*idleBody)
	body.onFail = func(err error) { r.markFailed(ep, errorKind(err), err) }
	size, err := r.blobRange(resp, offset)
	if err != nil {
		_ = body.Close()
		r.markFailed(ep, "range", err)
		return nil, 0, fmt.Errorf("fetch %s: %w", d, err)
	}
	return body, size, nil
}

// blobRange checks that resp starts at offset, skipping bytes of a 200
// answer to a Range request, and returns the blob's total size.
func (r *registry) blobRange(resp *http.Response, offset int64) (int64, error) {
	if resp.StatusCode == http.StatusOK {
		if offset > 0 {
			if n, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				return 0, fmt.Errorf("skip %d bytes of a 200 to a Range request (got %d): %w: %w", offset, n, err, oci.ErrUnavailable)
			}
		}
		return resp.ContentLength, nil
	}
	total, err := oci.ContentRangeAt(resp.Header.Get("Content-Range"), offset)
	if err != nil {
		return 0, fmt.Errorf("206: %w: %w", err, oci.ErrUnavailable)
	}
	return total, nil
}
