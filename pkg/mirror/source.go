package mirror

import (
	"context"
	"errors"
	"io"

	"github.com/berth-registry/berth/pkg/oci"
)

// Upstream is the registry a repository lives on. Its bytes are unverified.
// Each method is given the whole request, so the upstream sees who asks
// and how many berths it came through. upstream.Client satisfies it.
type Upstream interface {
	// FetchBlob returns blob req.Digest from offset on and its total size.
	FetchBlob(ctx context.Context, req oci.Request, offset int64) (io.ReadCloser, int64, error)
	// HeadManifest resolves req.Reference to a descriptor.
	HeadManifest(ctx context.Context, req oci.Request) (oci.Descriptor, error)
	// GetManifest returns req.Reference's descriptor and bytes.
	GetManifest(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error)
}

// Peers are the other nodes of the cluster. Any error means "not from a
// peer": the mirror goes upstream. Their bytes are unverified. peer.Cluster
// satisfies it; NoPeers is a node alone.
type Peers interface {
	// FetchBlob returns blob req.Digest from offset on and its total size.
	FetchBlob(ctx context.Context, req oci.Request, offset int64) (io.ReadCloser, int64, error)
	// FetchManifest returns manifest req.Digest.
	FetchManifest(ctx context.Context, req oci.Request) (oci.Descriptor, []byte, error)
	// ResolveTag returns the descriptor tag req.Reference names.
	ResolveTag(ctx context.Context, req oci.Request) (oci.Descriptor, error)
}

// ErrNoPeer is NoPeers' answer to everything.
var ErrNoPeer = errors.New("no peer")

// NoPeers is the Peers of a node alone: single node, air gap. It is the
// one "no peers" value.
type NoPeers struct{}

var _ Peers = NoPeers{}

// FetchBlob implements Peers.
func (NoPeers) FetchBlob(context.Context, oci.Request, int64) (io.ReadCloser, int64, error) {
	return nil, 0, ErrNoPeer
}

// FetchManifest implements Peers.
func (NoPeers) FetchManifest(context.Context, oci.Request) (oci.Descriptor, []byte, error) {
	return oci.Descriptor{}, nil, ErrNoPeer
}

// ResolveTag implements Peers.
func (NoPeers) ResolveTag(context.Context, oci.Request) (oci.Descriptor, error) {
	return oci.Descriptor{}, ErrNoPeer
}
