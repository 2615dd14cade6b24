package peer

import (
	"slices"
	"strconv"
)

// A Plan says, for one blob, which node fetches each of its stripes from
// which other node. Every node derives it from the live membership and the
// digest alone, so every node that sees the same members computes the same
// plan without asking anyone:
//
//   - The blob is cut into S stripes (byte ranges): one for a small blob, up
//     to Fanout for a large one.
//   - Each stripe has its own tree: a k-ary heap (k = Fanout) laid over an
//     order of the nodes. The node at position 0 fetches the stripe from the
//     upstream; the node at position i > 0 streams it from the node at
//     position (i-1)/k while that node is still downloading it. The tree's
//     depth is about log_k N and no node has more than k children in it.
//   - The nodes are split into S groups by their rendezvous rank for the
//     digest (rank r is in group r mod S), and stripe t's order puts group
//     t first. So the inner nodes of stripe t's tree are group t's nodes:
//     each node relays at most one stripe to k children and is a leaf in
//     every other tree, and uploads about one blob's worth of bytes in all
//     (S stripes of 1/S each, k children for 1 stripe: k/S of the blob).
//   - Within its group a node's place in stripe t's order is its rendezvous
//     rank for the key "digest#t" (stripe 0 uses the digest itself, so a
//     single-stripe blob's root is the digest's owner, as before). When
//     group t has fewer nodes than the tree has inner places (N not a
//     multiple of S), the remaining places go to the nodes with the fewest
//     children in their own group's tree.
//
// When a parent dies or stalls, Sources lists where a node goes next: the
// parent's siblings (who hold the stripe about as far as the parent did),
// then the parent's ancestors, and the upstream last. A node serves at most
// MaxCopies() copies of a blob at once (its k planned children plus as many
// adopted ones); beyond that it answers "busy" and the asker tries its next
// source. So a dead node costs its subtree one timeout, and only a node
// whose every listed source is dead or busy goes upstream.
//
// Node indexes in a Plan refer to Nodes, which is sorted by name.
type Plan struct {
	Nodes   []string // the members, sorted by name; a node's index is its place here
	Fanout  int      // k: children per node in a stripe's tree
	Size    int64    // the blob's size in bytes
	stripes []stripe
}

// stripe is one byte range of the blob and its tree.
type stripe struct {
	start, end int64   // [start, end)
	order      []int32 // node index at each heap position
	pos        []int32 // heap position of each node index
}

// PlanOptions tunes NewPlan; zero values mean the defaults.
type PlanOptions struct {
	Fanout    int   // children per node in a stripe's tree (and stripes at most); 0 means DefaultFanout
	StripeMin int64 // the smallest stripe: blobs under twice this are one stripe; 0 means DefaultStripeMin
}

// Plan defaults.
const (
	DefaultFanout    = 4
	DefaultStripeMin = 32 << 20

	// Upstream stands for the upstream registry where a node index is
	// expected: the parent of a stripe's root, and the last source of all.
	Upstream = -1

	stripeAlign = 64 << 10 // stripe boundaries fall on 64 KiB
)

func (o PlanOptions) withDefaults() PlanOptions {
	if o.Fanout <= 0 {
		o.Fanout = DefaultFanout
	}
	if o.StripeMin <= 0 {
		o.StripeMin = DefaultStripeMin
	}
	return o
}

// Stripes returns how many stripes a blob of size bytes is cut into over
// n nodes: one under twice the smallest stripe (or when the size is
// unknown, < 0), then one more per smallest stripe, at most Fanout and at
// most n.
func (o PlanOptions) Stripes(size int64, n int) int {
	o = o.withDefaults()
	if size < 2*o.StripeMin || n < 2 {
		return 1
	}
	return int(min(int64(o.Fanout), int64(n), size/o.StripeMin))
}

// NewPlan computes the plan for the blob named by key (its digest) of size
// bytes over the member names (this node included). The result depends
// only on the set of names, the key, the size and the options, never on the
// order of names. Duplicate names count once. It panics on no names.
func NewPlan(key string, names []string, size int64, o PlanOptions) *Plan {
	o = o.withDefaults()
	ns := slices.Clone(names)
	slices.Sort(ns)
	ns = slices.Compact(ns)
	if len(ns) == 0 {
		panic("peer: NewPlan with no nodes")
	}
	index := make(map[string]int32, len(ns))
	ms := make([]member, len(ns))
	for i, n := range ns {
		index[n] = int32(i)
		ms[i] = member{Name: n}
	}
	p := &Plan{Nodes: ns, Fanout: o.Fanout, Size: size}
	nstripes := o.Stripes(size, len(ns))
	group := make([]int, len(ns))
	if nstripes > 1 {
		for r, m := range rank(key, ms) {
			group[index[m.Name]] = r % nstripes
		}
	}
	ranked := make([][]member, nstripes)
	own := make([]int, len(ns)) // children a node has in its own group's tree
	for t := range nstripes {
		skey := key
		if t > 0 {
			skey = key + "#" + strconv.Itoa(t)
		}
		ranked[t] = rank(skey, ms)
		at := 0
		for _, m := range ranked[t] {
			if i := index[m.Name]; group[i] == t {
				own[i] = min(max(len(ns)-1-o.Fanout*at, 0), o.Fanout)
				at++
			}
		}
	}
	for t := range nstripes {
		order := make([]int32, 0, len(ns))
		for _, m := range ranked[t] { // group t first: the tree's inner nodes
			if i := index[m.Name]; group[i] == t {
				order = append(order, i)
			}
		}
		others := len(order)
		for _, m := range ranked[t] {
			if i := index[m.Name]; group[i] != t {
				order = append(order, i)
			}
		}
		// When group t is too small to fill the inner places, the nodes with
		// the fewest children in their own trees fill them.
		slices.SortStableFunc(order[others:], func(a, b int32) int { return own[a] - own[b] })
		pos := make([]int32, len(ns))
		for at, i := range order {
			pos[i] = int32(at)
		}
		p.stripes = append(p.stripes, stripe{start: bound(size, t, nstripes), end: bound(size, t+1, nstripes), order: order, pos: pos})
	}
	return p
}

// bound is where stripe t of n starts in a blob of size bytes.
func bound(size int64, t, n int) int64 {
	switch {
	case t == 0:
		return 0
	case t == n:
		return max(size, 0)
	}
	b := size / int64(n) * int64(t)
	return b - b%stripeAlign
}

// Index returns name's node index, or -1 if it is not in the plan.
func (p *Plan) Index(name string) int {
	if i, ok := slices.BinarySearch(p.Nodes, name); ok {
		return i
	}
	return -1
}

// Stripes returns the number of stripes.
func (p *Plan) Stripes() int { return len(p.stripes) }

// Range returns stripe s's bytes, [start, end). With an unknown size (< 0)
// the one stripe is [0, -1): to the end, whatever it is.
func (p *Plan) Range(s int) (start, end int64) {
	if p.Size < 0 {
		return 0, -1
	}
	return p.stripes[s].start, p.stripes[s].end
}

// MaxCopies is the most copies of one blob a node serves at once: its k
// planned children and up to k more it adopts when a parent dies.
func (p *Plan) MaxCopies() int { return 2 * p.Fanout }

// Root returns the node that fetches stripe s from the upstream.
func (p *Plan) Root(s int) int { return int(p.stripes[s].order[0]) }

// Parent returns the node that node streams stripe s from, or Upstream.
func (p *Plan) Parent(s, node int) int {
	at := p.stripes[s].pos[node]
	if at == 0 {
		return Upstream
	}
	return int(p.stripes[s].order[(int(at)-1)/p.Fanout])
}

// Children returns the nodes that stream stripe s from node, in order.
func (p *Plan) Children(s, node int) []int {
	st := p.stripes[s]
	first := int(st.pos[node])*p.Fanout + 1
	var out []int
	for at := first; at < first+p.Fanout && at < len(st.order); at++ {
		out = append(out, int(st.order[at]))
	}
	return out
}

// Depth returns node's depth in stripe s's tree: 0 for the root.
func (p *Plan) Depth(s, node int) int {
	d := 0
	for at := int(p.stripes[s].pos[node]); at > 0; at = (at - 1) / p.Fanout {
		d++
	}
	return d
}

// Sources returns, in order, where node fetches stripe s from: its parent
// first, then the nodes to try when the parent dies, stalls or answers
// busy, and Upstream last (alone for the root).
//
// After the parent come the parent's siblings, starting at a different
// one for each of the parent's children so that the orphans spread over
// them; then the parent's ancestors up to the root. A child of the root
// tries the root's earlier children instead, the first of which goes
// upstream itself: a dead root costs the upstream no more than the bytes it
// had not yet passed on.
func (p *Plan) Sources(s, node int) []int {
	st := p.stripes[s]
	k := p.Fanout
	at := int(st.pos[node])
	if at == 0 {
		return []int{Upstream}
	}
	parent := (at - 1) / k
	out := []int{int(st.order[parent])}
	if parent == 0 {
		for sib := 1; sib < at; sib++ {
			out = append(out, int(st.order[sib]))
		}
		return append(out, Upstream)
	}
	grand := (parent - 1) / k
	var sibs []int
	for sib := grand*k + 1; sib <= grand*k+k && sib < len(st.order); sib++ {
		if sib != parent {
			sibs = append(sibs, sib)
		}
	}
	j := (at - 1) % k // which child of the parent this node is
	for n := range sibs {
		out = append(out, int(st.order[sibs[(j+n)%len(sibs)]]))
	}
	for a := grand; ; a = (a - 1) / k {
		out = append(out, int(st.order[a]))
		if a == 0 {
			break
		}
	}
	return append(out, Upstream)
}
