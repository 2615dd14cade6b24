package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// race asks every peer at once and returns the first success; the others
// are cancelled and a late success is discarded. It returns the joined
// errors when all fail. It blocks until a success or until all have failed
// (each attempt is bound by ctx and its own timeouts).
func race[T any](ctx context.Context, peers []member, try tryFunc[T], discard func(T)) (T, error) {
	type result struct {
		i   int
		v   T
		err error
	}
	ch := make(chan result, len(peers))
	cancels := make([]context.CancelCauseFunc, len(peers))
	for i, m := range peers {
		actx, cancel := context.WithCancelCause(ctx)
		cancels[i] = cancel
		go func() {
			v, err := try(actx, cancel, m)
			ch <- result{i, v, err}
		}()
	}
	var errs []error
	for n := range len(peers) {
		r := <-ch
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		for j, cancel := range cancels {
			if j != r.i {
				cancel(errLost)
			}
		}
		go func(left int) { // reap the losers; they end soon, being cancelled
			for range left {
				if r := <-ch; r.err == nil {
					discard(r.v)
				}
			}
		}(len(peers) - n - 1)
		return r.v, nil
	}
	var zero T
	return zero, errors.Join(errs...)
}

// blobResult is a blob stream from a peer and the blob's total size.
type blobResult struct {
	body *peerBody
	size int64
}

// tryBlob asks m for the blob's bytes [offset, end) (end -1: to the end);
// a peer may send the whole blob (200) or that range (206), and a range
// past a smaller blob's end comes to that end.
func (c *Cluster) tryBlob(ctx context.Context, cancel context.CancelCauseFunc, m member, via oci.Via, req oci.Request, offset, end int64) (blobResult, error) {
	repo, d := req.Repo, req.Digest
	ttfb := c.cfg.Timeout
	if via == oci.ViaPeerRelay {
		ttfb = c.relayTimeout()
	}
	hdr := blobHeader(req, via == oci.ViaPeerRelay, req.RelaySize, offset, end)
	resp, err := c.ask(ctx, cancel, m, via, http.MethodGet, blobPath(repo, d), repo.Registry, ttfb, hdr)
	if err != nil {
		return blobResult{}, err
	}
	var size, skip int64
	switch resp.StatusCode {
	case http.StatusOK: // the whole blob, even if a range was asked for
		size, skip = resp.ContentLength, offset
	case http.StatusPartialContent:
		size, err = oci.ContentRangeAt(resp.Header.Get("Content-Range"), offset)
	case http.StatusTooManyRequests:
		_ = statusError(m, resp, nil)
		err = fmt.Errorf("peer %s: %w", m.Name, ErrBusy)
		cancel(err)
		return blobResult{}, err
	default:
		err = statusError(m, resp, oci.ErrBlobUnknown)
		cancel(err)
		return blobResult{}, err
	}
	if err != nil {
		_ = resp.Body.Close()
		err = fmt.Errorf("peer %s: %w: %w", m.Name, err, oci.ErrUnavailable)
		cancel(err)
		return blobResult{}, err
	}
	body := c.newBody(ctx, cancel, m, d, resp.Body)
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			_ = body.Close()
			return blobResult{}, fmt.Errorf("peer %s: skip to %d: %w", m.Name, offset, err)
		}
	}
	return blobResult{body: body, size: size}, nil
}

// blobHeader is the header of a request for a blob's bytes [offset, end):
// end -1 asks to the end, and offset 0 with it for the whole blob (no
// Range). A relay request also carries its hop count (see relayHops) and
// the blob's size when it is known (size > 0).
func blobHeader(req oci.Request, relay bool, size, offset, end int64) http.Header {
	hdr := http.Header{}
	switch {
	case end > offset:
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-"+strconv.FormatInt(end-1, 10))
	case offset > 0:
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	if relay {
		hdr.Set(oci.RelayHopHeader, strconv.Itoa(relayHops(req, offset, end)))
		if size > 0 {
			hdr.Set(oci.RelaySizeHeader, strconv.FormatInt(size, 10))
		}
	}
	return hdr
}

// manifestResult is a verified manifest from a peer.
type manifestResult struct {
	desc oci.Descriptor
	body []byte
}

func (c *Cluster) tryManifest(ctx context.Context, cancel context.CancelCauseFunc, m member, via oci.Via, req oci.Request) (manifestResult, error) {
	repo, d := req.Repo, req.Digest
	ttfb := c.cfg.Timeout
	if via == oci.ViaPeerOwner {
		ttfb = c.cfg.OwnerTimeout
	}
	resp, err := c.ask(ctx, cancel, m, via, http.MethodGet, manifestPath(repo, d.String()), repo.Registry, ttfb,
		http.Header{"Accept": {strings.Join(oci.ManifestTypes, ", ")}})
	if err != nil {
		return manifestResult{}, err
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(m, resp, oci.ErrManifestUnknown)
		cancel(err)
		return manifestResult{}, err
	}
	body := c.newBody(ctx, cancel, m, d, resp.Body)
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	switch {
	case err != nil:
		return manifestResult{}, err
	case len(b) > oci.MaxManifestSize:
		return manifestResult{}, fmt.Errorf("manifest %s from peer %s: over %d bytes: %w", d, m.Name, oci.MaxManifestSize, oci.ErrTooLarge)
	case d.Algorithm().FromBytes(b) != d:
		err := fmt.Errorf("manifest %s from peer %s: %w", d, m.Name, oci.ErrDigestMismatch)
		c.suspect(m.Name, err)
		return manifestResult{}, err
	}
	return manifestResult{oci.Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: d, Size: int64(len(b))}, b}, nil
}

func blobPath(repo oci.Repo, d digest.Digest) string {
	return "/v2/" + repo.Name + "/blobs/" + d.String()
}

func manifestPath(repo oci.Repo, ref string) string {
	return "/v2/" + repo.Name + "/manifests/" + ref
}
