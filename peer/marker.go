package peer

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"github.com/berth-registry/berth/pkg/oci"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header is the request header that marks a request from a peer. Its value
// is five comma-separated fields:
//
//	v1,<mode>,<unix seconds>,<node name>,<signature>
//
// where mode is "owner", "holder" or "relay" (oci.ViaPeerOwner,
// oci.ViaPeerHolder, oci.ViaPeerRelay)
// and signature is the unpadded
// base64url HMAC-SHA256, under a key derived from the cluster secret, of
//
//	"berth-peer v1\n" mode "\n" seconds "\n" node "\n" method "\n" request-URI
//
// (the request-URI as sent: escaped path and query). A marker is valid for
// MaxSkew either side of the receiver's clock.
const Header = "X-Berth-Peer"

// The marker's mode field: who asks, as written on the wire. In Go code
// who asks is an oci.Via; these are its two peer values' spelling.
const (
	modeOwner  = "owner"  // oci.ViaPeerOwner
	modeHolder = "holder" // oci.ViaPeerHolder
	modeRelay  = "relay"  // oci.ViaPeerRelay
)

// modeOf spells via for the marker.
func modeOf(via oci.Via) string {
	switch via {
	case oci.ViaPeerHolder:
		return modeHolder
	case oci.ViaPeerRelay:
		return modeRelay
	}
	return modeOwner
}

// MaxSkew bounds the difference between a marker's time and the receiver's
// clock, which bounds how long a captured marker can be replayed.
const MaxSkew = 2 * time.Minute

const markerVersion = "v1"

// keys are the two keys derived from the cluster secret.
type keys struct {
	gossip []byte // memberlist's AES-256 key
	marker []byte // the HMAC key of the marker
}

// deriveKeys derives the gossip and marker keys from a secret (the contents
// of the secret file, surrounding white space ignored, so a trailing newline
// does not split a cluster). The two derivations differ, so neither key
// reveals the other.
func deriveKeys(secret []byte) keys {
	secret = bytes.TrimSpace(secret)
	g := sha256.Sum256(append([]byte("berth gossip key v1\x00"), secret...))
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("berth peer marker key v1"))
	return keys{gossip: g[:], marker: m.Sum(nil)}
}

// signer signs and verifies markers. Its methods are safe for concurrent use.
type signer struct {
	key  []byte
	node string
	now  func() time.Time
}

func (s signer) mac(mode, ts, node, method, uri string) []byte {
	h := hmac.New(sha256.New, s.key)
	for _, f := range []string{"berth-peer " + markerVersion, mode, ts, node, method} {
		h.Write([]byte(f))
		h.Write([]byte{'\n'})
	}
	h.Write([]byte(uri))
	return h.Sum(nil)
}

// sign sets the marker on a client request. The request's URL must be final.
func (s signer) sign(req *http.Request, mode string) {
	ts := strconv.FormatInt(s.now().Unix(), 10)
	sig := s.mac(mode, ts, s.node, req.Method, req.URL.RequestURI())
	req.Header.Set(Header, strings.Join([]string{markerVersion, mode, ts, s.node,
		base64.RawURLEncoding.EncodeToString(sig)}, ","))
}

// verify checks the marker of a server request and returns its mode and
// sender. ok is false for an unmarked request and for any marker that does
// not verify: wrong key, altered fields, another method or URI, too old or
// too far in the future.
func (s signer) verify(r *http.Request) (mode, node string, ok bool) {
	vals := r.Header.Values(Header)
	if len(vals) != 1 {
		return "", "", false
	}
	f := strings.Split(vals[0], ",")
	if len(f) != 5 || f[0] != markerVersion || (f[1] != modeOwner && f[1] != modeHolder && f[1] != modeRelay) {
		return "", "", false
	}
	secs, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return "", "", false
	}
	if skew := s.now().Sub(time.Unix(secs, 0)); skew > MaxSkew || skew < -MaxSkew {
		return "", "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(f[4])
	if err != nil {
		return "", "", false
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	if !hmac.Equal(sig, s.mac(f[1], f[2], f[3], r.Method, uri)) {
		return "", "", false
	}
	return f[1], f[3], true
}

// PeerMode reports whether r carries a valid marker (see Header) signed
// with this cluster's secret, and who it says asks: oci.ViaPeerOwner,
// oci.ViaPeerHolder or oci.ViaPeerRelay. Otherwise (an ordinary client, or any marker that does
// not verify) it returns oci.ViaClient and false: such a request gets
// ordinary treatment. It does not block.
func (c *Cluster) PeerMode(r *http.Request) (oci.Via, bool) {
	switch mode, _, ok := c.sign.verify(r); {
	case !ok:
		return oci.ViaClient, false
	case mode == modeHolder:
		return oci.ViaPeerHolder, true
	case mode == modeRelay:
		return oci.ViaPeerRelay, true
	default:
		return oci.ViaPeerOwner, true
	}
}
