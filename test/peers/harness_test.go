package peers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"
)

type node = nodetest.Node

var freeAddr = proctest.FreeAddr

// startCluster starts n nodes named n0.. that all name each other as
// seeds, and waits until each sees the others.
func startCluster(t *testing.T, up *upstreamtest.Registry, n int, opts map[int]nodetest.Member) []*node {
	return nodetest.StartCluster(t, up, n, opts)
}

// startNode starts a member named nodeName ("": its own) with gossip on
// bind, joining seeds.
func startNode(t *testing.T, up *upstreamtest.Registry, nodeName, bind string, seeds []string, m nodetest.Member) *node {
	m.Name = nodeName
	return nodetest.StartMember(t, up, bind, seeds, m)
}

func waitPeers(t *testing.T, nodes []*node, want int) { nodetest.WaitPeers(t, nodes, want) }

// owner returns the node that owns key among nodes.
func owner(nodes []*node, key string) *node {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	first := peer.Rank(key, names)[0]
	for _, n := range nodes {
		if n.Name == first {
			return n
		}
	}
	return nil
}

// nsTransport adds containerd's ?ns=<registry> to every request.
type nsTransport struct {
	ns   string
	base http.RoundTripper
}

func (t nsTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	q := r.URL.Query()
	q.Set("ns", t.ns)
	r.URL.RawQuery = q.Encode()
	return t.base.RoundTrip(r)
}

func client(t *testing.T, ns string) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: nsTransport{ns: ns, base: tr}, Timeout: time.Minute}
}

// pull pulls repo:tag through n like a client: manifest, config and every
// layer, each checked against want's digests.
func pull(ctx context.Context, c *http.Client, n *node, repo, tag string, want v1.Image) error {
	ref, err := name.ParseReference(n.Addr+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithTransport(c.Transport), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	wantD, _ := want.Digest()
	if got, _ := img.Digest(); got != wantD {
		return fmt.Errorf("%s: manifest %s, want %s", n.Name, got, wantD)
	}
	cfgName, _ := want.ConfigName()
	if err := getBlob(ctx, c, n, repo, digest.Digest(cfgName.String())); err != nil {
		return err
	}
	layers, _ := want.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if err := getBlob(ctx, c, n, repo, digest.Digest(d.String())); err != nil {
			return err
		}
	}
	return nil
}

// getBlob GETs blob d from n and checks its bytes.
func getBlob(ctx context.Context, c *http.Client, n *node, repo string, d digest.Digest) error {
	b, err := readBlob(ctx, c, n, repo, d, nil)
	if err != nil {
		return err
	}
	if got := sha(b); got != d {
		return fmt.Errorf("%s: blob %s: got %s", n.Name, d, got)
	}
	return nil
}

// readBlob GETs blob d from n; first, if set, sees the body once some
// bytes have arrived.
func readBlob(ctx context.Context, c *http.Client, n *node, repo string, d digest.Digest, first func()) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr+"/v2/"+repo+"/blobs/"+d.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: blob %s: status %d", n.Name, d, resp.StatusCode)
	}
	var buf []byte
	if first != nil {
		p := make([]byte, 1024)
		k, err := io.ReadFull(resp.Body, p)
		if err != nil {
			return nil, fmt.Errorf("%s: first bytes: %w", n.Name, err)
		}
		buf = p[:k]
		first()
	}
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: blob %s: %w", n.Name, d, err)
	}
	return append(buf, rest...), nil
}

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.Digest("sha256:" + hex.EncodeToString(s[:]))
}

// stored checks that n's store holds d with the right bytes, or not at all.
func stored(n *node, d digest.Digest) (bool, error) {
	f, _, err := n.Store().Open(d)
	if err != nil {
		return false, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return true, err
	}
	if got := sha(b); got != d {
		return true, errors.New("store holds wrong bytes for " + d.String() + ": " + got.String())
	}
	return true, nil
}
