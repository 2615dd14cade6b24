package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/google/go-containerregistry/pkg/v1/random"
)

// childEnv makes the test binary run berth's main instead of the tests, so
// the signal tests exercise the real process: flags, signals and exit code.
const childEnv = "BERTHTEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		main()
		os.Exit(0)
	}
	leaktest.Main(m, upstreamtest.IgnoreLeaks())
}

// berthProc is berth running as a child process.
type berthProc struct {
	*proctest.Proc
	lines         chan map[string]any // stderr, one JSON log line each
	addr, tlsAddr string
	adminAddr     string
}

func startBerth(t *testing.T, args ...string) *berthProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--log-format", "json", "--admin-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = proctest.ChildEnv(childEnv + "=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &berthProc{lines: make(chan map[string]any, 1024)}
	p.Proc = proctest.Run(t, cmd, "berth", 0, func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": sc.Text()}
			}
			select {
			case p.lines <- m:
			default: // nobody reads: drop rather than block the child's stderr
			}
		}
	})
	serving := p.waitLog(t, "serving")
	p.addr, _ = serving["addr"].(string)
	p.tlsAddr, _ = serving["tls"].(string)
	p.adminAddr, _ = serving["admin"].(string)
	return p
}

// waitLog returns the next log line with msg, skipping others.
func (p *berthProc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("berth exited before logging %q", msg)
			}
			if l["msg"] == msg {
				return l
			}
		case <-timeout:
			t.Fatalf("no %q log line", msg)
		}
	}
}

func TestServeProcessSIGHUPReloadsCertificateAndSIGTERMLetsADownloadFinish(t *testing.T) {
	up := upstreamtest.New(t)
	img, err := random.Image(32<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "big/app", "v1", img)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()

	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, c2 := genCert(t, 1), genCert(t, 2)
	roots := x509.NewCertPool()
	roots.AddCert(c1.x509)
	roots.AddCert(c2.x509)
	c1.write(t, certFile, keyFile)

	p := startBerth(t, "--addr", "127.0.0.1:0", "--cache-dir", filepath.Join(dir, "cache"),
		"--registry", up.Host+"="+up.URL, "--default-registry", up.Host,
		"--tls-addr", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	if p.addr == "" || p.tlsAddr == "" || p.adminAddr == "" {
		t.Fatalf("serving on %q, %q and admin %q", p.addr, p.tlsAddr, p.adminAddr)
	}
	// Operator surfaces answer on the admin listener only.
	for _, path := range []string{"/metrics", "/debug/audit", "/debug/pprof/"} {
		if got := getStatus(t, "http://"+p.adminAddr+path); got != http.StatusOK {
			t.Errorf("admin GET %s: %d, want 200", path, got)
		}
		if got := getStatus(t, "http://"+p.addr+path); got != http.StatusNotFound {
			t.Errorf("registry GET %s: %d, want 404", path, got)
		}
	}
	if got := tlsSerial(t, p.tlsAddr, roots); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	// SIGHUP: a new pair that kept the old files' stamps is served.
	c2.writeKeepingStamps(t, certFile, keyFile)
	if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "reloaded credentials and certificates")
	if got := tlsSerial(t, p.tlsAddr, roots); got != 2 {
		t.Fatalf("after SIGHUP: serial %d, want 2", got)
	}

	// SIGTERM during a download held half way by the upstream.
	release := up.Gate()
	defer release()
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get("http://" + p.addr + "/v2/big/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if resp.StatusCode != 200 {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	if _, err := io.CopyN(h, resp.Body, 64<<10); err != nil {
		t.Fatal(err)
	}
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLog(t, "shutting down")
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			break // refused: the listener is closed
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	select {
	case <-p.Done():
		t.Fatalf("berth exited (%v) with a response under way", p.Err())
	default: // the upstream holds the body: the response cannot have ended
	}
	release()
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("body after SIGTERM: %v", err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
		t.Fatalf("body %s, want %s", got, d)
	}
	select {
	case <-p.Done():
		if p.Err() != nil {
			t.Fatalf("berth exit: %v", p.Err())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("berth did not exit after its last response")
	}
}

func tlsSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("https /v2/: %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
}

type genCertPair struct {
	x509            *x509.Certificate
	certPEM, keyPEM []byte
}

func genCert(t *testing.T, serial int64) genCertPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "berth test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, BasicConstraintsValid: true, IsCA: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalECPrivateKey(key)
	return genCertPair{c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})}
}

// write writes the pair padded to a fixed size (PEM ignores trailing
// newlines), so a later pair can keep the files' sizes.
func (g genCertPair) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	for _, f := range []struct {
		path string
		b    []byte
	}{{certFile, g.certPEM}, {keyFile, g.keyPEM}} {
		b := append(f.b, strings.Repeat("\n", 4096-len(f.b))...)
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// writeKeepingStamps writes the pair and restores the files' modification
// times: only an explicit reload can notice the change.
func (g genCertPair) writeKeepingStamps(t *testing.T, certFile, keyFile string) {
	t.Helper()
	var mods []time.Time
	for _, p := range []string{certFile, keyFile} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		mods = append(mods, fi.ModTime())
	}
	g.write(t, certFile, keyFile)
	for i, p := range []string{certFile, keyFile} {
		if err := os.Chtimes(p, mods[i], mods[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func getStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
