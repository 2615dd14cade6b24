package oci

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
)

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
	// ViaPeerRelay is a peer asking this node as its parent (or failover)
	// in a blob's relay plan: fill as for a client (down the plan, then
	// upstream) and stream while downloading; not a client's pull.
	ViaPeerRelay
)

func (v Via) String() string {
	switch v {
	case ViaClient:
		return "client"
	case ViaPeerOwner:
		return "owner"
	case ViaPeerHolder:
		return "holder"
	case ViaPeerRelay:
		return "relay"
	}
	return "via(" + strconv.Itoa(int(v)) + ")"
}

// HopHeader counts the berth instances a request has passed through. A
// berth asking its upstream sends the count of its incoming request plus
// one (1 when the request did not come from a berth).
const HopHeader = "X-Berth-Hops"

// MaxHops is the hop count from which a berth refuses a request as a loop
// (a chain of berths longer than a site cache in front of node caches is
// taken for a mirror loop).
const MaxHops = 4

// RelayHopHeader counts the nodes of a cluster a relay request (a node
// asking its parent in a blob's relay tree) has passed through: a node
// whose fill was started by a relay request with n sends n+1 to its own
// parent. The cluster refuses a count deeper than its relay plan can be
// (a loop between nodes whose views of the membership differ). It is
// separate from HopHeader, which counts berths in front of each other.
const RelayHopHeader = "X-Berth-Relay-Hops"

// RelaySizeHeader carries, on a relay request, the blob's size as the
// asking node knows it (from a manifest, or a stripe's plan), so a parent
// that starts its own fill for the request can stripe it at once without
// having seen the manifest. A hint only: a wrong one costs a slower start.
const RelaySizeHeader = "X-Berth-Blob-Size"

// ParseHops reads the hop count of an incoming request: 0 when the header
// is absent. An unreadable or negative value is an error.
func ParseHops(h http.Header) (int, error) {
	v := h.Get(HopHeader)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s %q: not a hop count", HopHeader, v)
	}
	return n, nil
}

// Manifest returns a client's request for manifest ref (a tag or a
// digest) of r.
func (r Repo) Manifest(ref string) Request {
	return Request{Kind: KindManifest, Repo: r}.WithReference(ref)
}

// Blob returns a client's request for blob d of r.
func (r Repo) Blob(d digest.Digest) Request {
	return Request{Kind: KindBlob, Repo: r, Reference: d.String(), Digest: d}
}

// WithReference returns req asking for ref (a tag or a digest) instead,
// from the same asker: a tag's manifest by digest, an index's child.
func (req Request) WithReference(ref string) Request {
	req.Reference, req.Digest = ref, ""
	if d, ok := shaDigest(ref); ok {
		req.Digest = d
	} else if d, err := digest.Parse(ref); err == nil {
		req.Digest = d
	}
	return req
}
