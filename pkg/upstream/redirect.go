package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"

	"github.com/berth-registry/berth/pkg/oci"
)

// maxRedirects bounds the redirects one request follows.
const maxRedirects = 10

// errRedirect is a redirect berth refuses to follow. It wraps
// oci.ErrBadUpstream: the upstream answered, with something berth will
// not do.
var errRedirect = fmt.Errorf("redirect refused: %w", oci.ErrBadUpstream)

// checkRedirect is the registry's http.Client CheckRedirect. It follows at
// most maxRedirects redirects, only to http and https URLs, never carries
// an Authorization header to another host (the auth transport adds it only
// for the endpoint's own host, so this is a second guard), and, unless the
// registry allows private redirects, refuses a target written as a
// loopback, private, link-local, unspecified or metadata IP. A target
// written as a name is checked again when it is dialled (guardedDial), so
// a name that resolves to such an address is refused too (DNS rebinding
// included: the check is on the address connected to). A redirect to one
// of the registry's own endpoint hosts is always followed.
func (r *registry) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects: %w", maxRedirects, errRedirect)
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %q URL: %w", req.URL.Scheme, errRedirect)
	}
	if req.URL.Host != via[0].URL.Host {
		req.Header.Del("Authorization")
	}
	if r.allowPrivateRedirects || r.endpointHost(req.URL.Host) {
		return nil
	}
	if ip, err := netip.ParseAddr(req.URL.Hostname()); err == nil {
		if class := addrClass(ip); class != "" {
			return r.refusedRedirect(class, req.URL.Host)
		}
	}
	return nil
}

// refusedRedirect logs the target (the log may name addresses; the error,
// which a client sees, does not) and returns the error.
func (r *registry) refusedRedirect(class, target string) error {
	r.c.log.Warn("upstream redirect refused", "registry", r.name, "target", target, "class", class)
	return fmt.Errorf("redirect to a %s address (allowPrivateRedirects is off): %w", class, errRedirect)
}

// endpointHost reports whether host (host:port as in a URL) is one of the
// registry's own endpoints.
func (r *registry) endpointHost(host string) bool {
	for _, ep := range r.endpoints {
		if ep.url.Host == host {
			return true
		}
	}
	return false
}

// redirectKey marks the context of a request that follows a redirect to a
// host that is not an endpoint; its value is that URL's host name.
type redirectKey struct{}

// markRedirect gives a redirected request (req.Response is set) to a host
// other than the endpoints' the mark guardedDial checks.
func (r *registry) markRedirect(req *http.Request) *http.Request {
	if req.Response == nil || r.allowPrivateRedirects || r.endpointHost(req.URL.Host) {
		return req
	}
	return req.WithContext(context.WithValue(req.Context(), redirectKey{}, req.URL.Hostname()))
}

// guardedDial wraps dial so that a connection for a marked redirect (see
// markRedirect) is refused when the address it connects to is loopback,
// private, link-local, unspecified or metadata. The check runs on the
// resolved address just before connect, so a name cannot resolve to a
// public address for a check and a private one for the connection. A dial
// to another host than the redirect's (an HTTP proxy) is not checked.
func (r *registry) guardedDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _ := ctx.Value(redirectKey{}).(string)
		if h, _, err := net.SplitHostPort(addr); host == "" || err != nil || h != host {
			return d.DialContext(ctx, network, addr)
		}
		guarded := *d
		var refused error
		guarded.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return err
			}
			if class := addrClass(ap.Addr()); class != "" {
				refused = r.refusedRedirect(class, host+" ("+address+")")
				return refused
			}
			return nil
		}
		conn, err := guarded.DialContext(ctx, network, addr)
		if refused != nil && errors.Is(err, refused) {
			return nil, refused
		}
		return conn, err
	}
}

// metadataAddrs are cloud metadata services outside the private and
// link-local ranges (Alibaba Cloud's is in the shared 100.64/10 range,
// which addrClass names on its own).
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("100.100.100.200"),
	netip.MustParseAddr("fd00:ec2::254"),
	netip.MustParseAddr("169.254.169.254"),
}

var sharedRange = netip.MustParsePrefix("100.64.0.0/10") // carrier-grade NAT, RFC 6598

// addrClass names why ip is no place for an upstream to send berth:
// "metadata", "loopback", "link-local", "private", "shared",
// "unspecified" or "multicast"; "" for a public address.
func addrClass(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case isMetadata(ip):
		return "metadata"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "link-local"
	case ip.IsPrivate():
		return "private"
	case sharedRange.Contains(ip):
		return "shared"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	return ""
}

func isMetadata(ip netip.Addr) bool {
	for _, m := range metadataAddrs {
		if ip == m {
			return true
		}
	}
	return false
}
