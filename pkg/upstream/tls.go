package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/berth-registry/berth/pkg/config"
)

// registryTransport returns the transport of one registry: base (or a clone
// of http.DefaultTransport) with the registry's timeouts and TLS settings.
// A base that is not an *http.Transport is returned unchanged.
// guard wraps the dialer (see registry.guardedDial).
func registryTransport(rc config.Registry, base http.RoundTripper, guard func(*net.Dialer) func(context.Context, string, string) (net.Conn, error)) (http.RoundTripper, error) {
	var t *http.Transport
	switch b := base.(type) {
	case nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		t = b.Clone()
	default:
		return base, nil
	}
	to := rc.Timeouts
	dialer := &net.Dialer{Timeout: orDefault(to.Connect.D(), DefaultConnectTimeout), KeepAlive: 30 * time.Second}
	t.DialContext = guard(dialer)
	t.TLSHandshakeTimeout = orDefault(to.TLSHandshake.D(), DefaultTLSHandshakeTimeout)
	t.ResponseHeaderTimeout = orDefault(to.ResponseHeader.D(), DefaultResponseHeaderTimeout)
	t.DisableCompression = true // blobs are served as stored, never decoded on the way
	t.MaxIdleConnsPerHost = 16
	tc, err := tlsConfig(rc)
	if err != nil {
		return nil, err
	}
	t.TLSClientConfig = tc
	return t, nil
}

// tlsConfig builds the client TLS settings of a registry: system roots plus
// its CA file, its client certificate, or no verification when Insecure.
func tlsConfig(rc config.Registry) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: rc.Insecure} //nolint:gosec // the operator's choice for lab registries
	if rc.CAFile != "" {
		pem, err := os.ReadFile(rc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca file %s: no PEM certificates", rc.CAFile)
		}
		tc.RootCAs = pool
	}
	if rc.CertFile != "" || rc.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(rc.CertFile, rc.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
