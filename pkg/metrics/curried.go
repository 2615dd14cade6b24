package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// lv is one combination of up to three label values.
type lv struct{ a, b, c string }

// curried resolves a vec's label combinations to their series once. After
// the first time a combination costs one map read with no lock, where
// WithLabelValues hashes the values, takes the vec's lock and checks them
// as UTF-8 on every call: 3.5 % of berth's CPU serving manifest hits,
// which count four series each. The map is copied on each new
// combination, which is rare: it holds the series the vec holds (forget
// drops one the vec deleted), so it is bounded as they are.
type curried[T any] struct {
	n    int                      // label values per combination: 1 to 3
	with func(...string) T        // the vec's WithLabelValues
	m    atomic.Pointer[map[lv]T] // never modified once stored
	mu   sync.Mutex               // serialises the copies
}

func newCurried[T any](n int, with func(...string) T) *curried[T] {
	return &curried[T]{n: n, with: with}
}

func counters(n int, v *prometheus.CounterVec) *curried[prometheus.Counter] {
	return newCurried(n, v.WithLabelValues)
}

func (c *curried[T]) get(k lv) T {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	v := c.with([]string{k.a, k.b, k.c}[:c.n]...)
	next := make(map[lv]T, 1)
	if old != nil {
		next = make(map[lv]T, len(*old)+1)
		for k, v := range *old {
			next[k] = v
		}
	}
	next[k] = v
	c.m.Store(&next)
	return v
}

// forget drops a combination whose series the vec deleted, so that a
// later get makes it anew.
func (c *curried[T]) forget(k lv) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old == nil {
		return
	}
	if _, ok := (*old)[k]; !ok {
		return
	}
	next := make(map[lv]T, len(*old))
	for k2, v := range *old {
		if k2 != k {
			next[k2] = v
		}
	}
	c.m.Store(&next)
}
