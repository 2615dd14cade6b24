package peer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%d", i)
	}
	return out
}

// planTable is everything a plan says, for comparing plans.
func planTable(p *Plan) [][][]string {
	var out [][][]string
	for s := range p.Stripes() {
		var rows [][]string
		for i, n := range p.Nodes {
			row := []string{n}
			for _, src := range p.Sources(s, i) {
				if src == Upstream {
					row = append(row, "upstream")
				} else {
					row = append(row, p.Nodes[src])
				}
			}
			rows = append(rows, row)
		}
		out = append(out, rows)
	}
	return out
}

func TestPlanSameOnEveryNode(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 5, 17, 100} {
		ns := nodeNames(n)
		want := NewPlan("sha256:abc", ns, 1<<30, PlanOptions{})
		for range 5 {
			shuffled := slices.Clone(ns)
			r.Shuffle(n, func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			got := NewPlan("sha256:abc", shuffled, 1<<30, PlanOptions{})
			if diff := cmp.Diff(planTable(want), planTable(got)); diff != "" {
				t.Fatalf("%d nodes: the plan depends on the order members are seen in (-want +got):\n%s", n, diff)
			}
		}
	}
}

func TestPlanSingleStripeRootIsTheOwner(t *testing.T) {
	t.Parallel()
	ns := nodeNames(9)
	for _, key := range testKeys(50) {
		p := NewPlan(key, ns, 10<<20, PlanOptions{})
		if p.Stripes() != 1 {
			t.Fatalf("a 10 MiB blob has %d stripes, want 1", p.Stripes())
		}
		if got, want := p.Nodes[p.Root(0)], Rank(key, ns)[0]; got != want {
			t.Fatalf("key %s: root %s, want the owner %s", key, got, want)
		}
	}
}

func TestPlanStripes(t *testing.T) {
	t.Parallel()
	o := PlanOptions{Fanout: 4, StripeMin: 32 << 20}
	for _, c := range []struct {
		size int64
		want int
	}{{-1, 1}, {0, 1}, {1, 1}, {64<<20 - 1, 1}, {64 << 20, 2}, {100 << 20, 3}, {1 << 30, 4}, {1 << 40, 4}} {
		if got := o.Stripes(c.size, 10); got != c.want {
			t.Errorf("Stripes(%d) = %d, want %d", c.size, got, c.want)
		}
	}
	p := NewPlan("sha256:abc", nodeNames(10), 1<<30+12345, o)
	var at int64
	for s := range p.Stripes() {
		start, end := p.Range(s)
		if start != at || end <= start {
			t.Fatalf("stripe %d is [%d, %d), want it to start at %d", s, start, end, at)
		}
		at = end
	}
	if at != p.Size {
		t.Fatalf("the stripes end at %d, want %d", at, p.Size)
	}
}

// TestPlanTrees checks every stripe's tree: each node has one parent and a
// path to the upstream, at most k children, a depth of about log_k N; the
// roots of different stripes differ; no node uploads much more than one
// blob's worth.
func TestPlanTrees(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 5, 10, 13, 100, 1000, 10000} {
		for _, k := range []int{2, 4, 8} {
			p := NewPlan(fmt.Sprintf("sha256:%d", n*k), nodeNames(n), 1<<30, PlanOptions{Fanout: k})
			maxDepth := int(math.Ceil(math.Log(float64(n*(k-1)+1))/math.Log(float64(k)))) - 1
			upload := make([]int64, n)
			roots := map[int]bool{}
			for s := range p.Stripes() {
				start, end := p.Range(s)
				roots[p.Root(s)] = true
				seen := 0
				for i := range n {
					if c := p.Children(s, i); len(c) > k {
						t.Fatalf("n=%d k=%d stripe %d: node %d has %d children", n, k, s, i, len(c))
					}
					for _, c := range p.Children(s, i) {
						if p.Parent(s, c) != i {
							t.Fatalf("n=%d k=%d: child %d of %d has parent %d", n, k, c, i, p.Parent(s, c))
						}
						upload[i] += end - start
						seen++
					}
					if d := p.Depth(s, i); d > maxDepth {
						t.Fatalf("n=%d k=%d: node %d at depth %d, want at most %d", n, k, i, d, maxDepth)
					}
				}
				if seen != n-1 {
					t.Fatalf("n=%d k=%d stripe %d: %d nodes have a parent, want %d", n, k, s, seen, n-1)
				}
			}
			if len(roots) != min(p.Stripes(), n) {
				t.Fatalf("n=%d k=%d: %d distinct roots for %d stripes", n, k, len(roots), p.Stripes())
			}
			for i, u := range upload {
				if float64(u) > 1.5*float64(p.Size) {
					t.Fatalf("n=%d k=%d: node %d uploads %.2fx the blob", n, k, i, float64(u)/float64(p.Size))
				}
			}
		}
	}
}

// TestPlanFailoverBounded kills nodes and replays every node's choice of
// source down its Sources list, skipping the dead and the busy (a node
// serving MaxCopies already): no survivor is left without a source, no node
// serves more than MaxCopies, and only the children of a dead root (and
// only the first of them) go upstream.
func TestPlanFailoverBounded(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{10, 100, 2000} {
		p := NewPlan("sha256:fail", nodeNames(n), 1<<30, PlanOptions{})
		dead := make([]bool, n)
		ndead := 0
		for ndead < max(1, n/100) {
			if i := r.IntN(n); !dead[i] {
				dead[i] = true
				ndead++
			}
		}
		dead[p.Root(0)] = true // a dead root too
		copies := make([]int, n)
		for s := range p.Stripes() {
			for i := range n {
				if !dead[i] && p.Parent(s, i) != Upstream && !dead[p.Parent(s, i)] {
					copies[p.Parent(s, i)]++
				}
			}
		}
		upstream := 0
		for s := range p.Stripes() {
			for i := range n {
				par := p.Parent(s, i)
				if dead[i] || par == Upstream || !dead[par] {
					continue
				}
				src := Upstream
				for _, c := range p.Sources(s, i)[1:] {
					if c == Upstream || (!dead[c] && copies[c] < p.MaxCopies()) {
						src = c
						break
					}
				}
				if src == Upstream {
					upstream++
					if par != p.Root(s) {
						t.Errorf("n=%d stripe %d: node %d goes upstream though only its parent %d (not the root) died", n, s, i, par)
					}
					continue
				}
				copies[src]++
			}
		}
		for i, c := range copies {
			if c > p.MaxCopies() {
				t.Errorf("n=%d: node %d serves %d copies, over %d", n, i, c, p.MaxCopies())
			}
		}
		if upstream > p.Stripes() {
			t.Errorf("n=%d: %d stripe fetches went upstream after the failures, want at most one per dead root", n, upstream)
		}
	}
}
