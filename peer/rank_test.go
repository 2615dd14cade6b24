package peer

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func nodes(n int) []member {
	out := make([]member, n)
	for i := range out {
		out[i] = member{Name: fmt.Sprintf("berth-%d", i), HTTP: fmt.Sprintf("10.0.0.%d:5000", i)}
	}
	return out
}

func names(ms []member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func testKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("sha256:%064x", i*7919)
	}
	return out
}

func TestRankStableWhateverTheOrder(t *testing.T) {
	t.Parallel()
	ms := nodes(7)
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range testKeys(200) {
		want := names(rank(k, ms))
		shuffled := slices.Clone(ms)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(want, names(rank(k, shuffled))); diff != "" {
			t.Fatalf("key %s: order depends on input order (-want +got):\n%s", k, diff)
		}
	}
	// Pinned: nodes running different berth versions must agree, so the
	// weights may never change.
	want := []string{"berth-1", "berth-4", "berth-2", "berth-3", "berth-0"}
	if diff := cmp.Diff(want, names(rank(fmt.Sprintf("sha256:%064x", 0), nodes(5)))); diff != "" {
		t.Fatalf("the ranking changed (-want +got):\n%s", diff)
	}
	if got := weight("k", "n"); got != 10819106547706052207 {
		t.Fatalf("weight(k, n) = %d, changed", got)
	}
}

func TestRankBalanced(t *testing.T) {
	t.Parallel()
	ms := nodes(5)
	const n = 20000
	owners := map[string]int{}
	for _, k := range testKeys(n) {
		owners[rank(k, ms)[0].Name]++
	}
	for _, m := range ms {
		if got, want := owners[m.Name], n/len(ms); got < want*85/100 || got > want*115/100 {
			t.Errorf("%s owns %d of %d keys, want about %d", m.Name, got, n, want)
		}
	}
}

func TestRankMinimalMovement(t *testing.T) {
	t.Parallel()
	five, six := nodes(5), nodes(6)
	newcomer := six[5].Name
	const n = 12000
	moved := 0
	for _, k := range testKeys(n) {
		before, after := rank(k, five), rank(k, six)
		if before[0].Name != after[0].Name {
			moved++
			if after[0].Name != newcomer {
				t.Fatalf("key %s moved from %s to %s, not to the newcomer", k, before[0].Name, after[0].Name)
			}
		}
		// The others keep their relative order: holders stay holders.
		rest := slices.DeleteFunc(slices.Clone(after), func(m member) bool { return m.Name == newcomer })
		if diff := cmp.Diff(names(before), names(rest)); diff != "" {
			t.Fatalf("key %s: order of the old nodes changed:\n%s", k, diff)
		}
	}
	if lo, hi := n/6*80/100, n/6*120/100; moved < lo || moved > hi {
		t.Errorf("%d of %d keys moved when a sixth node joined, want about %d", moved, n, n/6)
	}
	// A node leaving moves only its own keys.
	four := slices.Delete(slices.Clone(five), 2, 3)
	for _, k := range testKeys(n) {
		before, after := rank(k, five)[0], rank(k, four)[0]
		if before.Name != after.Name && before.Name != five[2].Name {
			t.Fatalf("key %s moved from %s though only %s left", k, before.Name, five[2].Name)
		}
	}
}

func TestSameHost(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		advertised, gossip string
		want               bool
	}{
		{"127.0.0.1:5000", "127.0.0.1", true},
		{"10.0.0.5:5000", "10.0.0.5", true},
		{"[::1]:5000", "::1", true},
		{"127.0.0.2:5000", "127.0.0.1", false},
		{"169.254.169.254:80", "10.0.0.5", false},
		{"berth-0.example:5000", "10.0.0.5", false},
		{"10.0.0.5", "10.0.0.5", false},
	} {
		if got := sameHost(c.advertised, net.ParseIP(c.gossip)); got != c.want {
			t.Errorf("sameHost(%s, %s) = %v, want %v", c.advertised, c.gossip, got, c.want)
		}
	}
}
