package mirror

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// Upstream is the registry a repository lives on. Its bytes are unverified.
// upstream.Client satisfies it.
type Upstream interface {
	FetchBlob(ctx context.Context, repo oci.Repo, d digest.Digest, offset int64) (io.ReadCloser, int64, error)
	HeadManifest(ctx context.Context, repo oci.Repo, ref string) (oci.Descriptor, error)
	GetManifest(ctx context.Context, repo oci.Repo, ref string) (oci.Descriptor, []byte, error)
	Get(ctx context.Context, repo oci.Repo, subpath, rawQuery string) (*http.Response, error)
}

// Peers are the other nodes of the cluster. Any error means "not from a
// peer": the mirror goes upstream. Their bytes are unverified. peer.Cluster
// satisfies it.
type Peers interface {
	FetchBlob(ctx context.Context, repo oci.Repo, d digest.Digest, offset int64) (io.ReadCloser, int64, error)
	FetchManifest(ctx context.Context, repo oci.Repo, d digest.Digest) (oci.Descriptor, []byte, error)
	ResolveTag(ctx context.Context, repo oci.Repo, tag string) (oci.Descriptor, error)
}

// ErrNoPeer is NoPeers' answer to everything.
var ErrNoPeer = errors.New("no peer")

// NoPeers is the Peers of a node alone: single node, air gap.
type NoPeers struct{}

// FetchBlob implements Peers.
func (NoPeers) FetchBlob(context.Context, oci.Repo, digest.Digest, int64) (io.ReadCloser, int64, error) {
	return nil, 0, ErrNoPeer
}

// FetchManifest implements Peers.
func (NoPeers) FetchManifest(context.Context, oci.Repo, digest.Digest) (oci.Descriptor, []byte, error) {
	return oci.Descriptor{}, nil, ErrNoPeer
}

// ResolveTag implements Peers.
func (NoPeers) ResolveTag(context.Context, oci.Repo, string) (oci.Descriptor, error) {
	return oci.Descriptor{}, ErrNoPeer
}

// Via says who is asking, which decides where a miss may be filled from.
type Via int

const (
	// ViaClient is an ordinary client: fill from peers, then upstream.
	ViaClient Via = iota
	// ViaPeerOwner is a peer asking this node as the content's owner: fill
	// from upstream only, never from other peers (no loops).
	ViaPeerOwner
	// ViaPeerHolder is a peer asking whether this node holds the content:
	// answer from the store or a fill under way, never fetch.
	ViaPeerHolder
)
