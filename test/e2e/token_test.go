package e2e

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenServer is a Docker-style token issuer, as Docker Hub's auth
// service is, an http.Handler: GET /token?service=S&scope=repository:NAME:ACTIONS answers
// a JWT (RS256) that distribution's `auth: token` trusts through a
// self-signed root certificate. Pulls are anonymous, except from
// repositories under private/, where an anonymous token grants nothing (as
// Docker Hub's does); other actions need Basic credentials user/pass
// (else 401). Safe for concurrent use.
type tokenServer struct {
	key        *rsa.PrivateKey
	certFile   string
	user, pass string

	mu     sync.Mutex
	scopes map[string]int // scope -> tokens issued
}

const (
	tokenService = "berth-e2e-registry"
	tokenIssuer  = "berth-e2e-issuer"
)

func newTokenServer(t testing.TB) *tokenServer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: tokenIssuer},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{key: key, user: "pusher", pass: "e2e-push-password", scopes: map[string]int{},
		certFile: filepath.Join(t.TempDir(), "token-root.pem")}
	if err := os.WriteFile(ts.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return ts
}

// ServeHTTP answers token requests.
func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { ts.serveToken(w, r) }

// registryConfig is the auth section of a registry that trusts ts, with
// realm http://<realmHost>/token.
func (ts *tokenServer) registryConfig(realmHost string) string {
	return fmt.Sprintf("auth:\n  token:\n    realm: http://%s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
		realmHost, tokenService, tokenIssuer, ts.certFile)
}

// Scopes returns a copy of the tokens issued per scope.
func (ts *tokenServer) Scopes() map[string]int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	m := make(map[string]int, len(ts.scopes))
	for k, v := range ts.scopes {
		m[k] = v
	}
	return m
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *tokenServer) serveToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("service") != tokenService {
		http.Error(w, "unknown service", http.StatusBadRequest)
		return
	}
	user, pass, authed := r.BasicAuth()
	authed = authed && user == ts.user && pass == ts.pass
	var grants []access
	for _, scope := range q["scope"] {
		for _, s := range strings.Split(scope, " ") {
			typ, rest, _ := strings.Cut(s, ":")
			i := strings.LastIndex(rest, ":")
			if typ != "repository" || i < 0 {
				continue
			}
			acts := strings.Split(rest[i+1:], ",")
			if !authed && strings.HasPrefix(rest, "private/") {
				acts = nil // as Docker Hub does: a token, but no access
			}
			for _, a := range acts {
				if a != "pull" && !authed {
					w.Header().Set("WWW-Authenticate", `Basic realm="berth-e2e"`)
					http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"push needs credentials"}]}`, http.StatusUnauthorized)
					return
				}
			}
			grants = append(grants, access{Type: typ, Name: rest[:i], Actions: acts})
			ts.mu.Lock()
			ts.scopes[s]++
			ts.mu.Unlock()
		}
	}
	tok, err := ts.sign(grants)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 300,
		"issued_at": time.Now().UTC().Format(time.RFC3339)})
}

// sign makes an RS256 JWT whose kid is the key's RFC 7638 thumbprint, the
// way distribution v3 names the keys of its root certificates.
func (ts *tokenServer) sign(grants []access) (string, error) {
	now := time.Now()
	e := big.NewInt(int64(ts.key.E)).Bytes()
	b64 := base64.RawURLEncoding.EncodeToString
	thumb := sha256.Sum256(fmt.Appendf(nil, `{"e":"%s","kty":"RSA","n":"%s"}`, b64(e), b64(ts.key.N.Bytes())))
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": b64(thumb[:])})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{"iss": tokenIssuer, "sub": "anonymous", "aud": tokenService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprint(now.UnixNano()), "access": grants})
	if err != nil {
		return "", err
	}
	signing := b64(header) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, ts.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + b64(sig), nil
}
