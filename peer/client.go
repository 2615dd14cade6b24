package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"time"

	"github.com/berth-registry/berth/pkg/idle"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// Causes a peer request is cancelled with.
var (
	errNoAnswer = errors.New("no response in time")
	errStalled  = idle.ErrTimeout // a body that sent nothing for IdleTimeout
	errLost     = errors.New("another peer answered first")
)

// newClient returns the HTTP client peers are asked with: no proxy from the
// environment, no compression, no redirects, connections kept alive.
func newClient(dialTimeout time.Duration) (*http.Transport, *http.Client) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return tr, &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ask sends one marked request to peer m and returns its final response,
// whatever the status. The peer must send a first response (1xx or final)
// within ttfb, then the final headers within HeaderTimeout. cancel must
// cancel ctx; ask calls it on failure, and on success the caller owns it and
// calls it when done with the body.
func (c *Cluster) ask(ctx context.Context, cancel context.CancelCauseFunc, m member, via oci.Via, method, path, ns string, ttfb time.Duration, hdr http.Header) (*http.Response, error) {
	u := url.URL{Scheme: "http", Host: m.HTTP, Path: path, RawQuery: url.Values{"ns": {ns}}.Encode()}
	timer := time.AfterFunc(ttfb, func() { cancel(errNoAnswer) })
	answered := func() { timer.Reset(c.cfg.HeaderTimeout) }
	trace := &httptrace.ClientTrace{
		GotFirstResponseByte: answered,
		Got1xxResponse:       func(int, textproto.MIMEHeader) error { answered(); return nil },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, u.String(), nil)
	if err != nil {
		timer.Stop()
		cancel(err)
		return nil, fmt.Errorf("peer %s: %w", m.Name, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	c.sign.sign(req, modeOf(via))
	resp, err := c.client.Do(req)
	if err != nil {
		timer.Stop()
		if cause := context.Cause(ctx); cause == errNoAnswer {
			err = fmt.Errorf("%w (%s)", errNoAnswer, ttfb)
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" && !op.Timeout() && context.Cause(ctx) == nil {
			// Refused or unreachable: skip it until gossip catches up. A dial
			// that only took longer than this request's bound (a loaded
			// machine) is no reason to skip the node for its other blobs.
			c.suspect(m.Name, err)
		}
		cancel(err)
		return nil, fmt.Errorf("peer %s: %w", m.Name, err)
	}
	if !timer.Stop() && ctx.Err() != nil { // the timeout fired as the headers came
		_ = resp.Body.Close()
		return nil, fmt.Errorf("peer %s: %w", m.Name, context.Cause(ctx))
	}
	return resp, nil
}

// statusError closes resp and describes its status; a 404 wraps notFound.
func statusError(m member, resp *http.Response, notFound error) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	err := oci.ErrUnavailable
	if resp.StatusCode == http.StatusNotFound {
		err = notFound
	}
	return fmt.Errorf("peer %s: status %d: %w", m.Name, resp.StatusCode, err)
}

// peerBody is a peer's response body, cut by the idle timeout (an
// idle.Body): a Read blocked longer than it fails and counts a stall of
// the peer on the blob (see stalled).
// The bytes are not hashed here: the store hashes every byte it writes
// once, and calls Blame when the blob fails its digest, which suspects the
// peer. It is not safe for concurrent use (like any body).
type peerBody struct {
	*idle.Body
	c       *Cluster
	peer    string
	d       digest.Digest
	n       int64
	moved   bool   // a byte came: the peer's stalls on the blob are forgotten
	err     error  // sticky
	onClose func() // run once by Close; nil for none
}

func (c *Cluster) newBody(ctx context.Context, cancel context.CancelCauseFunc, m member, d digest.Digest, body io.ReadCloser) *peerBody {
	return &peerBody{Body: idle.New(ctx, cancel, body, c.cfg.IdleTimeout), c: c, peer: m.Name, d: d}
}

func (b *peerBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.Body.Read(p)
	if n > 0 {
		b.n += int64(n)
		if !b.moved {
			b.moved = true
			b.c.progressed(b.peer, b.d.String())
		}
	}
	switch {
	case err == io.EOF:
	case errors.Is(err, errStalled):
		err = fmt.Errorf("%s from peer %s: %w", b.d, b.peer, err)
		b.c.stalled(b.peer, b.d.String(), err)
	case err != nil:
		err = fmt.Errorf("%s from peer %s: %w", b.d, b.peer, err)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// Blame suspects the peer: the blob its bytes went into failed its digest.
func (b *peerBody) Blame(err error) {
	b.c.suspect(b.peer, fmt.Errorf("%s from peer %s: %w", b.d, b.peer, err))
}

// Close ends the request. It does not block on the peer.
func (b *peerBody) Close() error {
	if b.onClose != nil {
		b.onClose()
		b.onClose = nil
	}
	err := b.Body.Close()
	b.c.log.Debug("peer stream closed", "source", "peer", "peer", b.peer, "digest", b.d, "bytes", b.n, "err", b.err)
	return err
}
