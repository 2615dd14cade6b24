//go:build bench

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// env is what every scenario shares: the binaries, a work dir and the
// counting proxy in front of the upstream registry.
type env struct {
	berth, registry, nginx, work string
	gofloor                      string // the Go floor server (test/bench/gofloor), or "" for none
	wrk, containerd, ctr         string
	containerd2                  string        // directory of containerd 2.x's binaries
	ctrImg                       *image        // the containerd figures' image, pushed once
	perfDir                      string        // where perf record writes, or "" for none
	pprofDir                     string        // where heap profiles go, or "" for none
	smaps                        bool          // print what berth's peak RSS of its cold runs is made of
	timeline                     string        // where containerd pull timelines go, or "" for none
	clusterLogs                  string        // where the cluster runs' node logs (debug) go, or "" for none
	clusterIdle                  string        // peers.idleTimeout of the cluster nodes, or "" for the default
	clusterPause                 time.Duration // each berth node in turn is stopped (SIGSTOP) this long every 5 s of a cluster pull; 0 for none
	rev, command                 string        // for the report
	up                           *counter
	upProc                       *proc // the upstream registry behind up
	out                          *strings.Builder
}

func (e *env) printf(format string, a ...any) {
	fmt.Fprintf(e.out, format, a...)
	fmt.Printf(format, a...)
}

// target is one server under test.
type target struct {
	name string
	p    *proc
	url  string
}

// servingStatus is the peak RSS and CPU of the process that serves:
// nginx's worker rather than its master.
func servingStatus(t target) (int64, float64) {
	if t.name == "nginx" {
		for _, c := range childPIDs(t.p.pid()) {
			return pidStatus(c)
		}
	}
	return t.p.status()
}

// loadavg is the 1-minute load average.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// perf records berth's CPU profile (perf record -g) into the work dir's
// parent when -perf is set; the returned func stops it.
func (e *env) perf(ctx context.Context, p *proc, name string) func() {
	return e.perfPIDs(ctx, fmt.Sprint(p.pid()), name)
}

// perfPIDs records pids (comma separated) as perf does with -p.
func (e *env) perfPIDs(ctx context.Context, pids, name string) func() {
	if e.perfDir == "" {
		return func() {}
	}
	out := filepath.Join(e.perfDir, name+".perf.data")
	pp, err := startProc("perf-"+name, e.work, nil, "perf", "record", "-F", "499", "-g", "-p", pids, "-o", out)
	if err != nil {
		fmt.Println("perf:", err)
		return func() {}
	}
	return func() { pp.stop(30 * time.Second); fmt.Println("perf data:", out) }
}

// concurrently runs f(0..n-1) at once (released together) and returns the
// wall time until all have returned, and the first error.
func concurrently(n int, f func(i int) error) (float64, error) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = f(i)
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	wall := time.Since(t0).Seconds()
	for _, err := range errs {
		if err != nil {
			return wall, err
		}
	}
	return wall, nil
}

// metric sums the samples of a Prometheus text metric whose name and
// labels start with prefix (e.g. `berth_fetched_bytes_total{source="peer"`).
func metric(ctx context.Context, addr, prefix string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sum := 0.0
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		line := s.Text()
		if strings.HasPrefix(line, prefix) && (len(line) > len(prefix) && (line[len(prefix)] == ' ' || line[len(prefix)] == ',' || line[len(prefix)] == '}' || line[len(prefix)] == '{')) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum, s.Err()
}

func maxf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func fmtList(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, strconv.FormatFloat(x, 'f', 2, 64))
	}
	return strings.Join(s, ", ")
}
