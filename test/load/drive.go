package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// result is what a run saw.
type result struct {
	mu       sync.Mutex
	counts   map[string]int // kind → requests
	unexpect map[string]int // "kind: got" → requests with an answer not expected
	wrong    int            // responses whose bytes did not match
	berth5xx int            // 5xx from berth while the upstream answered no 5xx
	bytes    int64
	latency  map[string][]time.Duration

	elapsed             time.Duration
	maxRSS, startRSS    int64
	maxFDs, startFDs    int
	endRSS              int64
	endFDs              int
	upRequests, up5xx   int64
	requests, perClient int
}

func (r *result) note(kind, unexpected string, wrong bool, n int64, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[kind]++
	r.bytes += n
	r.latency[kind] = append(r.latency[kind], d)
	if wrong {
		r.wrong++
	}
	if unexpected != "" {
		r.unexpect[kind+": "+unexpected]++
		if strings.HasPrefix(unexpected, "5") {
			r.berth5xx++
		}
	}
}

// drive runs clients for d, each looping over a random mix of requests.
func drive(ctx context.Context, b *berthProc, up *upstreamtest.Registry, imgs []image, clients int, d time.Duration) *result {
	res := &result{counts: map[string]int{}, unexpect: map[string]int{}, latency: map[string][]time.Duration{}}
	res.startRSS, res.startFDs = b.sample()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxIdleConns: clients, IdleConnTimeout: 30 * time.Second}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	upBefore := up.Total()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				rss, fds := b.sample()
				res.mu.Lock()
				res.maxRSS, res.maxFDs = max(res.maxRSS, rss), max(res.maxFDs, fds)
				res.mu.Unlock()
			}
		}
	}()
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			for ctx.Err() == nil {
				oneRequest(ctx, cl, b, imgs, rng, res)
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	close(stopSampling)
	<-sampled
	tr.CloseIdleConnections()
	time.Sleep(3 * time.Second) // let berth close what the clients left
	res.endRSS, res.endFDs = b.sample()
	res.upRequests, res.up5xx = int64(up.Total()-upBefore), up.Errors5xx()
	return res
}

// oneRequest makes one request of a random kind and checks its answer.
func oneRequest(ctx context.Context, cl *http.Client, b *berthProc, imgs []image, rng *rand.Rand, res *result) {
	im := imgs[rng.IntN(len(imgs))]
	ly := im.layers[rng.IntN(len(im.layers))]
	var (
		kind, path, rangeHdr string
		want                 []byte // exact body expected, or nil
		wantStatus           = http.StatusOK
		wantCode             string
		auth                 bool
	)
	switch p := rng.IntN(100); {
	case p < 20:
		kind, path = "manifest", "/v2/"+im.repo+"/manifests/"+im.tag
	case p < 55:
		kind, path, want = "blob", "/v2/"+im.repo+"/blobs/"+ly.digest, ly.data
	case p < 75:
		start := rng.Int64N(int64(len(ly.data)))
		end := start + rng.Int64N(int64(len(ly.data))-start)
		kind, path, want, wantStatus = "range", "/v2/"+im.repo+"/blobs/"+ly.digest, ly.data[start:end+1], http.StatusPartialContent
		rangeHdr = fmt.Sprintf("bytes=%d-%d", start, end)
	case p < 85:
		kind, path, wantStatus, wantCode = "unauthorized", "/v2/"+im.repo+"/manifests/"+im.tag+"?ns="+b.private, http.StatusUnauthorized, "UNAUTHORIZED"
	case p < 90:
		kind, path, want, auth = "authorized", "/v2/"+im.repo+"/blobs/"+ly.digest+"?ns="+b.private, ly.data, true
	default:
		kind, path, wantStatus, wantCode = "unknown", fmt.Sprintf("/v2/%s/blobs/sha256:%064x", im.repo, rng.Uint64()), http.StatusNotFound, "BLOB_UNKNOWN"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+path, nil)
	req.Header.Set("Accept", manifestAccept)
	if rangeHdr != "" {
		req.Header.Set("Range", rangeHdr)
	}
	if auth {
		req.SetBasicAuth(b.user, b.password)
	}
	t0 := time.Now()
	resp, err := cl.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			res.note(kind, "error "+shortErr(err), false, 0, time.Since(t0))
		}
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	el := time.Since(t0)
	if err != nil {
		if ctx.Err() == nil {
			res.note(kind, "body "+shortErr(err), false, int64(len(body)), el)
		}
		return
	}
	got := fmt.Sprint(resp.StatusCode)
	if resp.StatusCode >= 400 {
		got += " " + errcode(body)
	}
	expect := fmt.Sprint(wantStatus)
	if wantCode != "" {
		expect += " " + wantCode
	}
	if got != expect {
		res.note(kind, got, false, int64(len(body)), el)
		return
	}
	wrong := false
	switch {
	case want != nil:
		wrong = !bytes.Equal(body, want)
	case kind == "manifest":
		sum := sha256.Sum256(body)
		wrong = "sha256:"+hex.EncodeToString(sum[:]) != im.manifest
	}
	res.note(kind, "", wrong, int64(len(body)), el)
}

// errcode returns the first errcode of a body.
func errcode(body []byte) string {
	if c := proctest.ErrCode(body); c != "" {
		return c
	}
	return "(no errcode)"
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func (r *result) print(w io.Writer) {
	total := 0
	for _, n := range r.counts {
		total += n
	}
	fmt.Fprintf(w, "\n%d requests in %s (%.0f/s), %.1f MiB received\n", total, r.elapsed.Round(time.Millisecond),
		float64(total)/r.elapsed.Seconds(), float64(r.bytes)/(1<<20))
	kinds := make([]string, 0, len(r.counts))
	for k := range r.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	fmt.Fprintf(w, "%-13s %8s %10s %10s\n", "kind", "requests", "p50", "p99")
	for _, k := range kinds {
		ls := r.latency[k]
		sort.Slice(ls, func(i, j int) bool { return ls[i] < ls[j] })
		fmt.Fprintf(w, "%-13s %8d %10s %10s\n", k, r.counts[k], ls[len(ls)/2].Round(time.Microsecond), ls[len(ls)*99/100].Round(time.Microsecond))
	}
	fmt.Fprintf(w, "wrong bytes: %d responses; 5xx from berth: %d; upstream: %d requests, %d 5xx\n", r.wrong, r.berth5xx, r.upRequests, r.up5xx)
	fmt.Fprintf(w, "berth RSS: %.0f MiB at start, %.0f MiB peak, %.0f MiB after; fds: %d at start, %d peak, %d after\n",
		float64(r.startRSS)/(1<<20), float64(r.maxRSS)/(1<<20), float64(r.endRSS)/(1<<20), r.startFDs, r.maxFDs, r.endFDs)
	for k, n := range r.unexpect {
		fmt.Fprintf(w, "unexpected: %s × %d\n", k, n)
	}
}

// failures lists what makes the run fail.
func (r *result) failures() []string {
	var why []string
	if r.wrong > 0 {
		why = append(why, fmt.Sprintf("%d responses with wrong bytes", r.wrong))
	}
	if r.berth5xx > 0 && r.up5xx == 0 {
		why = append(why, fmt.Sprintf("%d 5xx from berth with a healthy upstream", r.berth5xx))
	}
	if n := len(r.unexpect); n > 0 {
		why = append(why, fmt.Sprintf("%d kinds of unexpected answers", n))
	}
	return why
}
