package upstream

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func TestAddrClass(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ ip, want string }{
		{"169.254.169.254", "metadata"},
		{"fd00:ec2::254", "metadata"},
		{"100.100.100.200", "metadata"},
		{"127.0.0.1", "loopback"},
		{"127.8.9.10", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"169.254.1.2", "link-local"},
		{"fe80::1", "link-local"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"192.168.1.1", "private"},
		{"fc00::1", "private"},
		{"100.64.0.1", "shared"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"239.1.2.3", "multicast"},
		{"8.8.8.8", ""},
		{"2001:4860:4860::8888", ""},
	} {
		if got := addrClass(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("addrClass(%s) = %q, want %q", c.ip, got, c.want)
		}
	}
}

// TestRedirectGuard: an upstream's redirect to a loopback, link-local or
// metadata address, written as an IP or as a name that resolves to one, is
// refused before any byte reaches that address, unless the registry allows
// private redirects; a redirect to the registry's own endpoint is followed.
func TestRedirectGuard(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 3000)
	d, layer := layerOf(t, img)
	var storageHits atomic.Int64
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageHits.Add(1)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(layer))
	}))
	t.Cleanup(storage.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(storage.URL, "http://"))
	var target atomic.Pointer[string]
	up.fault.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") || r.URL.Query().Get("moved") != "" {
			return false
		}
		http.Redirect(w, r, *target.Load(), http.StatusTemporaryRedirect)
		return true
	})
	fetch := func(c *Client) error {
		rc, _, err := c.FetchBlob(testCtx(t), repoOf(c, "team/app").Blob(d), 0)
		if err != nil {
			return err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err == nil && !bytes.Equal(b, layer) {
			t.Errorf("%d bytes, not the layer", len(b))
		}
		return err
	}
	guarded := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	for _, to := range []string{
		storage.URL + "/blob",                      // loopback IP
		"http://localhost:" + port + "/blob",       // a name resolving to loopback: refused at dial
		"http://169.254.169.254/latest/meta-data/", // never dialled: refused by its IP
		"http://[fd00:ec2::254]/latest/meta-data/",
		"ftp://example.invalid/blob",
	} {
		target.Store(&to)
		err := fetch(guarded)
		if !errors.Is(err, oci.ErrBadUpstream) {
			t.Errorf("redirect to %s: %v, want an error wrapping ErrBadUpstream", to, err)
		}
		if err != nil && (strings.Contains(err.Error(), port) || strings.Contains(err.Error(), "169.254")) {
			t.Errorf("redirect to %s: the error names the target: %v", to, err)
		}
	}
	if n := storageHits.Load(); n != 0 {
		t.Fatalf("the loopback storage got %d requests through refused redirects", n)
	}
	// The registry's own endpoint host is always fine.
	own := up.front.URL + r0(d) + "?moved=1"
	target.Store(&own)
	if err := fetch(guarded); err != nil {
		t.Errorf("redirect to the endpoint itself: %v", err)
	}
	// With the allowance, the loopback storage is reached.
	allowed := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, AllowPrivateRedirects: true})
	to := "http://localhost:" + port + "/blob"
	target.Store(&to)
	if err := fetch(allowed); err != nil {
		t.Errorf("redirect to %s with allowPrivateRedirects: %v", to, err)
	}
	if n := storageHits.Load(); n != 1 {
		t.Errorf("storage got %d requests with allowPrivateRedirects, want 1", n)
	}
}

func r0(d interface{ String() string }) string { return "/v2/team/app/blobs/" + d.String() }

// TestErrorsNameNoAddress: a client-facing error of an unreachable
// endpoint names the registry and a reason, not the endpoint's address.
func TestErrorsNameNoAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c := newClient(t, config.Registry{Name: "private.example", Endpoints: []string{"http://" + dead}})
	_, err = c.HeadManifest(testCtx(t), oci.Repo{Registry: "private.example", Name: "a/b"}.Manifest("v1"))
	if !errors.Is(err, oci.ErrUnavailable) || strings.Contains(err.Error(), dead) || strings.Contains(err.Error(), "127.0.0.1") ||
		!strings.Contains(err.Error(), "private.example") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dead endpoint: %v; want ErrUnavailable naming private.example and a reason, no address", err)
	}
	dnsErr := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "registry.internal", Server: "10.96.0.10:53", IsNotFound: true}}
	if got := reason(dnsErr); strings.Contains(got, "10.96") || strings.Contains(got, "registry.internal") {
		t.Errorf("reason(%v) = %q names the resolver or the host", dnsErr, got)
	}
}
