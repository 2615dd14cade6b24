package peer

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestMarker(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	k := deriveKeys([]byte("s3cret\n"))
	client := signer{key: k.marker, node: "berth-a", now: func() time.Time { return now }}
	const uri = "/v2/library/alpine/blobs/sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + "?ns=docker.io"

	signed := func(method, mode string) *http.Request {
		req, err := http.NewRequest(method, "http://10.0.0.1:5000"+uri, nil)
		if err != nil {
			t.Fatal(err)
		}
		client.sign(req, mode)
		return req
	}
	// server turns a client request into what a server sees, optionally altered.
	server := func(req *http.Request, method, uri string) *http.Request {
		r := httptest.NewRequest(method, uri, nil)
		r.Header = req.Header.Clone()
		return r
	}
	edit := func(req *http.Request, f func(fields []string)) *http.Request {
		fields := strings.Split(req.Header.Get(Header), ",")
		f(fields)
		req.Header.Set(Header, strings.Join(fields, ","))
		return req
	}
	tests := []struct {
		name     string
		r        *http.Request
		at       time.Time
		key      []byte
		wantMode string
	}{
		{"owner", server(signed("GET", modeOwner), "GET", uri), now, k.marker, modeOwner},
		{"holder", server(signed("GET", modeHolder), "GET", uri), now, k.marker, modeHolder},
		{"head", server(signed("HEAD", modeOwner), "HEAD", uri), now, k.marker, modeOwner},
		{"within skew", server(signed("GET", modeOwner), "GET", uri), now.Add(MaxSkew - time.Second), k.marker, modeOwner},
		{"unmarked", httptest.NewRequest("GET", uri, nil), now, k.marker, ""},
		{"other secret", server(signed("GET", modeOwner), "GET", uri), now, deriveKeys([]byte("other")).marker, ""},
		{"gossip key is not the marker key", server(signed("GET", modeOwner), "GET", uri), now, k.gossip, ""},
		{"other method", server(signed("GET", modeOwner), "HEAD", uri), now, k.marker, ""},
		{"other path", server(signed("GET", modeOwner), "GET", strings.Replace(uri, "alpine", "busybox", 1)), now, k.marker, ""},
		{"other query", server(signed("GET", modeOwner), "GET", strings.Replace(uri, "docker.io", "ghcr.io", 1)), now, k.marker, ""},
		{"mode changed", edit(server(signed("GET", modeHolder), "GET", uri), func(f []string) { f[1] = modeOwner }), now, k.marker, ""},
		{"node changed", edit(server(signed("GET", modeOwner), "GET", uri), func(f []string) { f[3] = "berth-b" }), now, k.marker, ""},
		{"time changed", edit(server(signed("GET", modeOwner), "GET", uri), func(f []string) { f[2] = "1700000001" }), now, k.marker, ""},
		{"signature changed", edit(server(signed("GET", modeOwner), "GET", uri), func(f []string) { f[4] = "A" + f[4][1:] }), now, k.marker, ""},
		{"unknown mode", edit(server(signed("GET", modeOwner), "GET", uri), func(f []string) { f[1] = "admin" }), now, k.marker, ""},
		{"unknown version", edit(server(signed("GET", modeOwner), "GET", uri), func(f []string) { f[0] = "v2" }), now, k.marker, ""},
		{"expired", server(signed("GET", modeOwner), "GET", uri), now.Add(MaxSkew + time.Second), k.marker, ""},
		{"from the future", server(signed("GET", modeOwner), "GET", uri), now.Add(-MaxSkew - time.Second), k.marker, ""},
		{"garbage", func() *http.Request {
			r := httptest.NewRequest("GET", uri, nil)
			r.Header.Set(Header, "owner")
			return r
		}(), now, k.marker, ""},
		{"two markers", func() *http.Request {
			r := server(signed("GET", modeOwner), "GET", uri)
			r.Header.Add(Header, r.Header.Get(Header))
			return r
		}(), now, k.marker, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := signer{key: tt.key, node: "berth-b", now: func() time.Time { return tt.at }}
			mode, node, ok := s.verify(tt.r)
			if ok != (tt.wantMode != "") || mode != tt.wantMode {
				t.Fatalf("verify = %q, %v; want %q", mode, ok, tt.wantMode)
			}
			if ok && node != "berth-a" {
				t.Fatalf("sender = %q, want berth-a", node)
			}
		})
	}
}

func TestDeriveKeys(t *testing.T) {
	t.Parallel()
	a, b := deriveKeys([]byte("s3cret")), deriveKeys([]byte(" s3cret\n"))
	if string(a.gossip) != string(b.gossip) || string(a.marker) != string(b.marker) {
		t.Fatal("surrounding white space changes the keys")
	}
	if len(a.gossip) != 32 {
		t.Fatalf("gossip key is %d bytes, memberlist wants 16, 24 or 32", len(a.gossip))
	}
	if string(a.gossip) == string(a.marker) {
		t.Fatal("gossip and marker keys are the same")
	}
	if c := deriveKeys([]byte("s3cret2")); string(c.gossip) == string(a.gossip) {
		t.Fatal("different secrets give the same key")
	}
}
