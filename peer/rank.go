package peer

import (
	"cmp"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// member is a live node as the ranking sees it.
type member struct {
	Name string // the memberlist node name, unique in the cluster
	HTTP string // host:port of the node's registry API

	gossip string // ip:port of its memberlist; not part of the ranking
}

// rank orders members for key by rendezvous (highest random weight)
// hashing: each node's weight is a hash of the key and its name, and the
// heaviest node owns the key. Every node that sees the same members computes
// the same order, whatever order it sees them in; when a node joins or
// leaves, only the keys it owns (or comes to own) move. rank does not modify
// members.
func rank(key string, members []member) []member {
	type weighted struct {
		m member
		w uint64
	}
	ws := make([]weighted, len(members))
	for i, m := range members {
		ws[i] = weighted{m, weight(key, m.Name)}
	}
	slices.SortFunc(ws, func(a, b weighted) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.m.Name, b.m.Name) // equal weights: still one order everywhere
	})
	out := make([]member, len(ws))
	for i, w := range ws {
		out[i] = w.m
	}
	return out
}

// weight is the stable pseudo-random weight of node for key. It must never
// change between versions of berth that share a cluster.
func weight(key, node string) uint64 {
	h := xxhash.New()
	_, _ = h.WriteString(key)
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(node)
	return mix(h.Sum64())
}

// mix is splitmix64's finalizer, so nearby names spread apart.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Rank returns node names in rendezvous order for key (a digest string, or
// registry/name:tag for a tag): the first owns the key. Every berth node
// ranks the live members the same way; tests and tools use it to predict
// which node a fetch goes to.
func Rank(key string, names []string) []string {
	ms := make([]member, len(names))
	for i, n := range names {
		ms[i] = member{Name: n}
	}
	out := make([]string, len(ms))
	for i, m := range rank(key, ms) {
		out[i] = m.Name
	}
	return out
}
