package main

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/berth-registry/berth/peer"
)

// scenario is one simulated pull: nodes pulling one cold blob at once.
type scenario struct {
	Nodes     int
	Blob      int64   // bytes
	Link      float64 // bytes/s, each node's uplink and downlink, and the upstream's uplink
	Fail      float64 // fraction of nodes that die mid-transfer
	Plan      string  // "tree" (peer.NewPlan) or "star" (today's owner: peer.Rank)
	Fanout    int     // peer.PlanOptions.Fanout; 0 means berth's default
	StripeMin int64   // peer.PlanOptions.StripeMin; 0 means berth's default
	Latency   time.Duration
	Timeout   time.Duration // how long a node takes to notice its source died
	Seed      uint64
}

// result is what a run measured. Times are ratios to one node's direct
// download time (blob ÷ link).
type result struct {
	Nodes          int     `json:"nodes"`
	Plan           string  `json:"plan"`
	Fail           float64 `json:"fail"`
	UpstreamRatio  float64 `json:"upstream_ratio"`
	P50Ratio       float64 `json:"p50_ratio"`
	P99Ratio       float64 `json:"p99_ratio"`
	MaxRatio       float64 `json:"max_ratio"`
	MaxUploadRatio float64 `json:"max_upload_ratio"`
	MaxCopies      int     `json:"max_copies"`
	Stripes        int     `json:"stripes"`
	Depth          int     `json:"depth"`
	Failed         int     `json:"failed"`
	Incomplete     int     `json:"incomplete"`
	DirectSeconds  float64 `json:"direct_seconds"`
	WallSeconds    float64 `json:"wall_seconds"`
}

// sources is what the simulator needs from a plan.
type sources interface {
	stripes() int
	stripeRange(s int) (start, end int64)
	sources(s, node int) []int // parent first, peer.Upstream last
	limit() int                // most copies a node serves at once (busy beyond)
	depth() int
}

// treePlan is berth's plan: peer.NewPlan.
type treePlan struct{ p *peer.Plan }

func (t treePlan) stripes() int                     { return t.p.Stripes() }
func (t treePlan) stripeRange(s int) (int64, int64) { return t.p.Range(s) }
func (t treePlan) sources(s, node int) []int        { return t.p.Sources(s, node) }
func (t treePlan) limit() int                       { return t.p.MaxCopies() }
func (t treePlan) depth() (d int) {
	for s := range t.p.Stripes() {
		for i := range t.p.Nodes {
			d = max(d, t.p.Depth(s, i))
		}
	}
	return d
}

// starPlan is the plan before trees: the digest's rendezvous owner
// (peer.Rank) fetches from upstream and every other node streams from it;
// when the owner fails, they go upstream.
type starPlan struct {
	owner int
	size  int64
}

func (p starPlan) stripes() int                   { return 1 }
func (p starPlan) stripeRange(int) (int64, int64) { return 0, p.size }
func (p starPlan) limit() int                     { return math.MaxInt }
func (p starPlan) depth() int                     { return 1 }
func (p starPlan) sources(_ int, node int) []int {
	if node == p.owner {
		return []int{peer.Upstream}
	}
	return []int{p.owner, peer.Upstream}
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("node-%05d", i) // sorted order is index order, as in peer.Plan
	}
	return out
}

func makePlan(sc scenario) (sources, error) {
	names := nodeNames(sc.Nodes)
	key := fmt.Sprintf("sha256:%064x", sc.Seed)
	switch sc.Plan {
	case "tree":
		return treePlan{peer.NewPlan(key, names, sc.Blob, peer.PlanOptions{Fanout: sc.Fanout, StripeMin: sc.StripeMin})}, nil
	case "star":
		owner := peer.Rank(key, names)[0]
		i, _ := slices.BinarySearch(names, owner)
		return starPlan{owner: i, size: sc.Blob}, nil
	}
	return nil, fmt.Errorf("plan %q: want tree or star", sc.Plan)
}

// flow is one copy of one stripe from a source (a node or the upstream)
// to a node, pending until its first bytes can arrive.
type flow struct {
	dst, stripe, src int
	startAt          float64 // the request's round trip is over; bytes may flow once the source has some
	rate             float64
	frozen           bool
	coupled          bool // caught up with its source: never faster than the source's own inflow
	live             bool
}

// sim is the state of one run. Links: node i's uplink is i, the upstream's
// is n, node i's downlink is n+1+i.
type sim struct {
	sc      scenario
	p       sources
	n, ns   int
	lo, hi  []int64 // stripe ranges
	lat     float64
	got     []float64 // [node*ns+stripe] bytes of the stripe received
	first   []float64 // time of the first byte, or -1
	in      []int     // the flow bringing it, or -1
	next    []int     // index into the node's sources list of the current source
	retryAt []float64 // when a node whose source died asks the next one; +Inf if not waiting
	dead    []bool
	left    []int // stripes a node still lacks
	doneAt  []float64
	served  []int // copies a node serves now (pending or flowing)
	maxCopy int
	upload  []float64
	upBytes float64
	flows   []flow
	free    []int
	caps    []float64
	now     float64
}

func newSim(sc scenario) (*sim, error) {
	p, err := makePlan(sc)
	if err != nil {
		return nil, err
	}
	n, ns := sc.Nodes, p.stripes()
	s := &sim{sc: sc, p: p, n: n, ns: ns, lat: sc.Latency.Seconds()}
	for t := range ns {
		a, b := p.stripeRange(t)
		s.lo, s.hi = append(s.lo, a), append(s.hi, b)
	}
	s.got = make([]float64, n*ns)
	s.first = make([]float64, n*ns)
	s.in = make([]int, n*ns)
	s.next = make([]int, n*ns)
	s.retryAt = make([]float64, n*ns)
	for i := range s.in {
		s.first[i], s.in[i], s.retryAt[i] = -1, -1, math.Inf(1)
	}
	s.dead = make([]bool, n)
	s.left = make([]int, n)
	s.doneAt = make([]float64, n)
	s.served = make([]int, n+1)
	s.upload = make([]float64, n)
	s.caps = make([]float64, 2*n+1)
	for i := range s.caps {
		s.caps[i] = sc.Link
	}
	for i := range n {
		s.left[i] = ns
		s.doneAt[i] = math.Inf(1)
		for t := range ns {
			s.connect(i, t)
		}
	}
	return s, nil
}

func (s *sim) size(t int) float64 { return float64(s.hi[t] - s.lo[t]) }

// connect asks node i's next source for stripe t that is alive and not
// busy, from the byte it has.
func (s *sim) connect(i, t int) {
	k := i*s.ns + t
	list := s.p.sources(t, i)
	for ; s.next[k] < len(list); s.next[k]++ {
		src := list[s.next[k]]
		if src == peer.Upstream {
			s.start(i, t, s.n)
			return
		}
		if !s.dead[src] && s.served[src] < s.p.limit() {
			s.start(i, t, src)
			return
		}
	}
	panic("sources list without the upstream")
}

func (s *sim) start(i, t, src int) {
	f := flow{dst: i, stripe: t, src: src, startAt: s.now + 2*s.lat, live: true}
	var id int
	if len(s.free) > 0 {
		id = s.free[len(s.free)-1]
		s.free = s.free[:len(s.free)-1]
		s.flows[id] = f
	} else {
		id = len(s.flows)
		s.flows = append(s.flows, f)
	}
	s.in[i*s.ns+t] = id
	s.served[src]++
	if src < s.n {
		s.maxCopy = max(s.maxCopy, s.served[src])
	}
}

func (s *sim) end(id int) {
	f := &s.flows[id]
	s.served[f.src]--
	s.in[f.dst*s.ns+f.stripe] = -1
	f.live = false
	s.free = append(s.free, id)
}

// active reports whether a live flow may carry bytes now: its request is
// answered and its source has had bytes for one latency.
func (s *sim) active(f *flow) bool {
	if f.startAt > s.now {
		return false
	}
	if f.src == s.n {
		return true
	}
	fb := s.first[f.src*s.ns+f.stripe]
	return fb >= 0 && fb+s.lat <= s.now
}

const eps = 1.0 // bytes

// rates shares the links max-min fairly among the active flows (progressive
// filling), a flow caught up with its source never outrunning the source's
// own inflow.
func (s *sim) rates(act []int, onLink [][]int, kids [][]int) {
	nl := len(s.caps)
	rem := slices.Clone(s.caps)
	cnt := make([]int, nl)
	for l := range onLink {
		onLink[l] = onLink[l][:0]
	}
	for _, id := range act {
		f := &s.flows[id]
		f.frozen, f.rate, f.coupled = false, 0, false
		kids[id] = kids[id][:0]
	}
	var zero []int
	for _, id := range act {
		f := &s.flows[id]
		up, down := f.src, s.n+1+f.dst
		onLink[up] = append(onLink[up], id)
		onLink[down] = append(onLink[down], id)
		cnt[up]++
		cnt[down]++
		if f.src == s.n {
			continue
		}
		ks := f.src*s.ns + f.stripe
		if s.got[ks] >= s.size(f.stripe)-eps { // the source has the whole stripe
			continue
		}
		gap := s.got[ks] - s.got[f.dst*s.ns+f.stripe]
		switch pin := s.in[ks]; {
		case gap > eps:
		case gap < -eps || pin < 0 || !s.flows[pin].live || !s.active(&s.flows[pin]):
			zero = append(zero, id)
		default:
			f.coupled = true
			kids[pin] = append(kids[pin], id)
		}
	}
	var touched []int
	var freeze func(id int, r float64)
	freeze = func(id int, r float64) {
		f := &s.flows[id]
		if f.frozen {
			return
		}
		f.frozen, f.rate = true, r
		for _, l := range [2]int{f.src, s.n + 1 + f.dst} {
			rem[l] -= r
			cnt[l]--
			touched = append(touched, l)
		}
		for _, c := range kids[id] {
			freeze(c, r)
		}
	}
	for _, id := range zero {
		freeze(id, 0)
	}
	h := levelHeap{}
	ver := make([]int, nl)
	push := func(l int) {
		ver[l]++
		if cnt[l] > 0 {
			heap.Push(&h, level{max(rem[l], 0) / float64(cnt[l]), l, ver[l]})
		}
	}
	for l := range nl {
		push(l)
	}
	for h.Len() > 0 {
		e := heap.Pop(&h).(level)
		if e.ver != ver[e.link] || cnt[e.link] == 0 {
			continue
		}
		touched = touched[:0]
		for _, id := range onLink[e.link] {
			freeze(id, e.v)
		}
		slices.Sort(touched)
		for _, l := range slices.Compact(touched) {
			push(l)
		}
	}
}

type level struct {
	v    float64
	link int
	ver  int
}

type levelHeap []level

func (h levelHeap) Len() int           { return len(h) }
func (h levelHeap) Less(i, j int) bool { return h[i].v < h[j].v }
func (h levelHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *levelHeap) Push(x any)        { *h = append(*h, x.(level)) }
func (h *levelHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// run simulates until every live node has the blob (or a bound is hit).
func (s *sim) run() result {
	t0 := time.Now()
	direct := float64(s.sc.Blob) / s.sc.Link
	dtMin := direct / 1000
	failAt := math.Inf(1)
	var failed []int
	nf := int(math.Round(s.sc.Fail * float64(s.n)))
	if s.sc.Fail > 0 {
		nf = max(nf, 1) // at least one node, however small the cluster
	}
	if nf > 0 {
		r := rand.New(rand.NewPCG(s.sc.Seed, 99))
		failed = r.Perm(s.n)[:nf]
		failAt = direct / 2
	}
	onLink := make([][]int, len(s.caps))
	var kids [][]int
	var act []int
	limit := 1000*direct + float64(s.n)*direct*3 // a bound far past any sane finish
	for steps := 0; steps < 10_000_000; steps++ {
		if s.liveLeft() == 0 || s.now > limit {
			break
		}
		if s.now >= failAt {
			s.kill(failed)
			failAt = math.Inf(1)
		}
		for k, at := range s.retryAt { // nodes whose source died ask the next one
			if at <= s.now {
				s.retryAt[k] = math.Inf(1)
				if s.dead[k/s.ns] {
					continue
				}
				s.next[k]++
				s.connect(k/s.ns, k%s.ns)
			}
		}
		act = act[:0]
		for id := range s.flows {
			if f := &s.flows[id]; f.live && s.active(f) {
				act = append(act, id)
			}
		}
		for len(kids) < len(s.flows) {
			kids = append(kids, nil)
		}
		s.rates(act, onLink, kids)
		for _, id := range act { // first bytes: the flows fed by these may start one latency on
			if f := &s.flows[id]; f.rate > 0 && s.first[f.dst*s.ns+f.stripe] < 0 {
				s.first[f.dst*s.ns+f.stripe] = s.now
			}
		}
		dt := s.nextEvent(act, failAt) - s.now
		dt = max(dt, dtMin)
		if failAt-s.now > 0 {
			dt = min(dt, failAt-s.now)
		}
		s.advance(act, dt)
	}
	return s.result(direct, len(failed), time.Since(t0))
}

func (s *sim) liveLeft() (n int) {
	for i := range s.n {
		if !s.dead[i] && s.left[i] > 0 {
			n++
		}
	}
	return n
}

// kill stops nodes: their flows end; nodes fed by them notice after the
// timeout and ask their next source.
func (s *sim) kill(nodes []int) {
	for _, i := range nodes {
		s.dead[i] = true
	}
	for id := range s.flows {
		f := &s.flows[id]
		switch {
		case !f.live:
		case s.dead[f.dst]:
			s.end(id)
		case f.src < s.n && s.dead[f.src]:
			k := f.dst*s.ns + f.stripe
			s.end(id)
			s.retryAt[k] = s.now + s.sc.Timeout.Seconds()
		}
	}
}

// nextEvent is the earliest time rates change by themselves: a flow ends,
// catches up with its source, or starts.
func (s *sim) nextEvent(act []int, failAt float64) float64 {
	t := failAt
	for _, at := range s.retryAt {
		t = min(t, at)
	}
	for id := range s.flows {
		f := &s.flows[id]
		if !f.live || s.active(f) {
			continue
		}
		at := f.startAt
		if f.src < s.n {
			if fb := s.first[f.src*s.ns+f.stripe]; fb >= 0 {
				at = max(at, fb+s.lat)
			} else {
				continue // starts when its source does
			}
		}
		t = min(t, at)
	}
	for _, id := range act {
		f := &s.flows[id]
		k := f.dst*s.ns + f.stripe
		if f.rate > 0 {
			t = min(t, s.now+(s.size(f.stripe)-s.got[k])/f.rate)
		}
		if f.src == s.n || f.coupled {
			continue
		}
		ks := f.src*s.ns + f.stripe
		if s.got[ks] >= s.size(f.stripe)-eps {
			continue
		}
		srcRate := 0.0
		if pin := s.in[ks]; pin >= 0 && s.flows[pin].live && s.active(&s.flows[pin]) {
			srcRate = s.flows[pin].rate
		}
		gap := s.got[ks] - s.got[k]
		switch {
		case gap > eps && f.rate > srcRate:
			t = min(t, s.now+gap/(f.rate-srcRate))
		case gap < -eps && srcRate > 0:
			t = min(t, s.now-gap/srcRate)
		}
	}
	return t
}

// advance moves every active flow on by dt at its rate, no node passing
// the bytes its source has, and retires finished stripes.
func (s *sim) advance(act []int, dt float64) {
	s.now += dt
	before := make([]float64, len(act))
	for j, id := range act {
		f := &s.flows[id]
		k := f.dst*s.ns + f.stripe
		before[j] = s.got[k]
		s.got[k] = min(s.got[k]+f.rate*dt, s.size(f.stripe))
	}
	for range 16 { // a node never has more than its source had: chains settle in depth passes
		changed := false
		for _, id := range act {
			f := &s.flows[id]
			if f.src == s.n {
				continue
			}
			k, ks := f.dst*s.ns+f.stripe, f.src*s.ns+f.stripe
			if s.got[k] > s.got[ks] {
				s.got[k] = s.got[ks]
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	for j, id := range act {
		f := &s.flows[id]
		k := f.dst*s.ns + f.stripe
		d := s.got[k] - before[j]
		if d <= 0 {
			continue
		}
		if f.src == s.n {
			s.upBytes += d
		} else {
			s.upload[f.src] += d
		}
		if s.got[k] >= s.size(f.stripe)-eps {
			s.got[k] = s.size(f.stripe)
			s.end(id)
			if s.left[f.dst]--; s.left[f.dst] == 0 {
				s.doneAt[f.dst] = s.now
			}
		}
	}
}

func (s *sim) result(direct float64, failed int, wall time.Duration) result {
	var times []float64
	incomplete := 0
	for i := range s.n {
		switch {
		case s.dead[i]:
		case math.IsInf(s.doneAt[i], 1):
			incomplete++
		default:
			times = append(times, s.doneAt[i]/direct)
		}
	}
	slices.Sort(times)
	pct := func(q float64) float64 {
		if len(times) == 0 {
			return math.NaN()
		}
		return times[min(len(times)-1, int(math.Ceil(q*float64(len(times))))-1)]
	}
	maxUp := 0.0
	for _, u := range s.upload {
		maxUp = max(maxUp, u)
	}
	return result{
		Nodes: s.n, Plan: s.sc.Plan, Fail: s.sc.Fail,
		UpstreamRatio:  s.upBytes / float64(s.sc.Blob),
		P50Ratio:       pct(0.50),
		P99Ratio:       pct(0.99),
		MaxRatio:       pct(1),
		MaxUploadRatio: maxUp / float64(s.sc.Blob),
		MaxCopies:      s.maxCopy,
		Stripes:        s.ns,
		Depth:          s.p.depth(),
		Failed:         failed,
		Incomplete:     incomplete,
		DirectSeconds:  direct,
		WallSeconds:    wall.Seconds(),
	}
}

// simulate runs one scenario.
func simulate(sc scenario) (result, error) {
	s, err := newSim(sc)
	if err != nil {
		return result{}, err
	}
	return s.run(), nil
}
