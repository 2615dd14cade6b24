package metrics

import "sync"

// topRepos decides which repositories have their own pull series: at most
// n, and the most pulled ones, in memory bounded whatever names clients
// send.
//
// It counts pulls per repository in a table of at most 10n entries (at
// least 1,000). A repository not in a full table replaces an entry with
// few pulls and no series (see victim), and starts at 1, so a flood of
// names pulled once each churns among themselves and never outranks a
// repository pulled twice. A repository gets a series when
// there is a free one, or when its count passes the smallest count among
// the series holders, which then loses its series (and its later pulls
// count as "other"). A series therefore counts the pulls since it was
// given, and the set of series is the n most pulled repositories.
type topRepos struct {
	n, capacity int

	mu     sync.Mutex
	counts map[string]int64    // pulls per repository seen; len ≤ capacity
	series map[string]struct{} // repositories with their own series; len ≤ n
}

func newTopRepos(n int) *topRepos {
	return &topRepos{
		n: n, capacity: max(10*n, 1000),
		counts: map[string]int64{}, series: map[string]struct{}{},
	}
}

// pull counts one pull of key. own says whether key has its own series;
// evicted, if not "", names the repository whose series key took.
func (t *topRepos) pull(key string) (own bool, evicted string) {
	if t.n <= 0 {
		return false, ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.counts[key]; !ok && len(t.counts) >= t.capacity {
		delete(t.counts, t.victim())
	}
	t.counts[key]++
	if _, ok := t.series[key]; ok {
		return true, ""
	}
	if len(t.series) < t.n {
		t.series[key] = struct{}{}
		return true, ""
	}
	low := t.minHolder()
	if t.counts[key] <= t.counts[low] {
		return false, ""
	}
	delete(t.series, low)
	t.series[key] = struct{}{}
	return true, low
}

// minHolder is the series holder with the fewest pulls.
func (t *topRepos) minHolder() string {
	var low string
	lowN := int64(-1)
	for k := range t.series {
		if c := t.counts[k]; lowN < 0 || c < lowN {
			low, lowN = k, c
		}
	}
	return low
}

// victim picks the table entry a new name replaces: the one with the
// fewest pulls among a sample of 16 entries without a series (map
// iteration starts at random), as Redis samples for its LFU eviction, so
// a flood of new names costs O(1) each. Series holders are never dropped,
// and capacity exceeds n, so there is always a victim.
func (t *topRepos) victim() string {
	var low string
	lowN, seen := int64(-1), 0
	for k, c := range t.counts {
		if _, own := t.series[k]; own {
			continue
		}
		if lowN < 0 || c < lowN {
			low, lowN = k, c
		}
		if seen++; seen == 16 || c == 1 {
			break
		}
	}
	return low
}
