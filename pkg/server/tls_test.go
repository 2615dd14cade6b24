package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// pemSize is what every test certificate and key file is padded to, so a
// swap can keep a file's size (trailing newlines are ignored by PEM).
const pemSize = 4096

// testCert is a self-signed certificate for 127.0.0.1 with its key.
type testCert struct {
	x509            *x509.Certificate
	certPEM, keyPEM []byte
}

func newTestCert(t *testing.T, serial int64) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "berth test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		x509:    c,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}
}

// writePadded replaces path with b padded to pemSize, through a rename as
// cert-manager and kubelet's projected volumes do.
func writePadded(t *testing.T, path string, b []byte) {
	t.Helper()
	if len(b) > pemSize {
		t.Fatalf("pem of %d bytes", len(b))
	}
	b = append(b, []byte(strings.Repeat("\n", pemSize-len(b)))...)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// install writes c's pair to certFile and keyFile. With sameStamp, the files
// keep their previous modification time (and size): only a reload sees it.
func (c testCert) install(t *testing.T, certFile, keyFile string, sameStamp bool) {
	t.Helper()
	var mods []time.Time
	for _, p := range []string{certFile, keyFile} {
		fi, err := os.Stat(p)
		if sameStamp && err != nil {
			t.Fatal(err)
		}
		if err == nil {
			mods = append(mods, fi.ModTime())
		}
	}
	writePadded(t, certFile, c.certPEM)
	writePadded(t, keyFile, c.keyPEM)
	if sameStamp {
		for i, p := range []string{certFile, keyFile} {
			if err := os.Chtimes(p, mods[i], mods[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// servedSerial connects anew and returns the serial of the certificate the
// server presents, verified against roots.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("https: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("https /healthz: %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

func TestTLSCertificateSwappedOnDiskIsServed(t *testing.T) {
	up := upstreamtest.New(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	certs := []testCert{newTestCert(t, 1), newTestCert(t, 2), newTestCert(t, 3)}
	roots := x509.NewCertPool()
	for _, c := range certs {
		roots.AddCert(c.x509)
	}
	certs[0].install(t, certFile, keyFile, false)

	cfg := testConfig(t, up)
	cfg.Listen.TLS = config.TLS{Addr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	plain, tlsLn := listen(t), listen(t)
	stop := serve(t, srv, server.Listeners{HTTP: plain, TLS: tlsLn})
	defer stop()
	addr := tlsLn.Addr().String()

	if got := servedSerial(t, addr, roots); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}
	// Plain HTTP is served beside HTTPS.
	if resp, _ := get(t, http.MethodGet, "http://"+plain.Addr().String()+"/v2/"); resp.StatusCode != 200 {
		t.Fatalf("plain /v2/: %d", resp.StatusCode)
	}

	// A renewal written over the files is served on the next handshake.
	certs[1].install(t, certFile, keyFile, false)
	if got := servedSerial(t, addr, roots); got != 2 {
		t.Fatalf("after swap: serial %d, want 2", got)
	}

	// A swap that keeps size and modification time is invisible to the
	// stat check; Reload (SIGHUP) picks it up.
	certs[2].install(t, certFile, keyFile, true)
	if got := servedSerial(t, addr, roots); got != 2 {
		t.Fatalf("same stamp before reload: serial %d, want 2 (the check is by stamp)", got)
	}
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, addr, roots); got != 3 {
		t.Fatalf("after reload: serial %d, want 3", got)
	}

	// A broken pair (key of another certificate) keeps the last good one
	// in service, and Reload says why.
	writePadded(t, certFile, certs[0].certPEM)
	writePadded(t, keyFile, certs[1].keyPEM)
	if got := servedSerial(t, addr, roots); got != 3 {
		t.Fatalf("broken pair: serial %d, want 3 kept", got)
	}
	if err := srv.Reload(); err == nil || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("reload of a broken pair: %v", err)
	}
	certs[0].install(t, certFile, keyFile, false)
	if got := servedSerial(t, addr, roots); got != 1 {
		t.Fatalf("repaired: serial %d, want 1", got)
	}
}

func TestTLSMissingCertificateFailsNew(t *testing.T) {
	up := upstreamtest.New(t)
	cfg := testConfig(t, up)
	dir := t.TempDir()
	cfg.Listen.TLS = config.TLS{Addr: "127.0.0.1:0", CertFile: filepath.Join(dir, "no.crt"), KeyFile: filepath.Join(dir, "no.key")}
	if srv, err := server.New(cfg, nil); err == nil {
		srv.Close()
		t.Fatal("New with a missing certificate succeeded")
	}
}

// testConfig is a validated single-node config in front of up.
func testConfig(t *testing.T, up *upstreamtest.Registry) *config.Config {
	t.Helper()
	cfg := up.BerthConfig(t)
	cfg.Listen.Addr = "127.0.0.1:0"
	cfg.Cache.GCInterval = 0
	cfg.ShutdownGrace = config.Duration(10 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs srv on ls; stop ends it, checks Serve's error and closes srv.
// stop is idempotent and also runs at cleanup.
func serve(t *testing.T, srv *server.Server, ls server.Listeners) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ls) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	}
	t.Cleanup(stop)
	return stop
}
