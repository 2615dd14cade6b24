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
	perfDir                      string // where perf record writes, or "" for none
	up                           *counter
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

// benchCached times GETs of a warm 1 GiB blob: nginx (the file), berth
// and distribution's proxy, interleaved, reps times each.
func benchCached(ctx context.Context, e *env, img *image, reps int) error {
	l := img.Layers[0]
	dir := filepath.Join(e.work, "cached")
	defer os.RemoveAll(dir)
	ng, ngAddr, err := startNginx(ctx, e.nginx, filepath.Join(dir, "nginx"), filepath.Dir(l.Path))
	if err != nil {
		return err
	}
	defer ng.stop(5 * time.Second)
	dp, dAddr, err := startRegistry(ctx, e.registry, filepath.Join(dir, "dist"), "dist-proxy", "http://"+e.up.Addr)
	if err != nil {
		return err
	}
	defer dp.stop(10 * time.Second)
	bp, bAddr, err := startBerth(ctx, e.berth, filepath.Join(dir, "berth"), "berth", e.up.Addr, nil)
	if err != nil {
		return err
	}
	defer bp.stop(10 * time.Second)
	ts := []target{
		{"nginx", ng, fmt.Sprintf("http://%s/%s", ngAddr, filepath.Base(l.Path))},
		{"berth", bp, blobURL(bAddr, img.Repo, l.Digest)},
		{"distribution proxy", dp, blobURL(dAddr, img.Repo, l.Digest)},
	}
	for _, t := range ts { // warm: the first GET fills the cache (verified), the second checks it
		for i := range 2 {
			want := l.Digest
			if i == 1 {
				want = ""
			}
			if n, err := get(ctx, t.url, want); err != nil || n != l.Size {
				return fmt.Errorf("warm %s: %d bytes, %v", t.name, n, err)
			}
		}
	}
	e.up.reset()
	cpu0 := map[string]float64{}
	for _, t := range ts {
		_, cpu0[t.name] = servingStatus(t)
	}
	stopPerf := e.perf(ctx, bp, "cached")
	mibs := map[string][]float64{}
	for range reps {
		for _, t := range ts {
			t0 := time.Now()
			n, err := get(ctx, t.url, "")
			dt := time.Since(t0).Seconds()
			if err != nil || n != l.Size {
				return fmt.Errorf("%s: %d bytes, %v", t.name, n, err)
			}
			mibs[t.name] = append(mibs[t.name], float64(n)/MiB/dt)
		}
	}
	stopPerf()
	e.printf("\n### Cached %d MiB blob GET (warm), %d repetitions, interleaved (load avg %s)\n\n", l.Size/MiB, reps, loadavg())
	e.printf("| server | median MiB/s | min | max | median s | server CPU s per GET | peak RSS MiB |\n|---|---|---|---|---|---|---|\n")
	for _, t := range ts {
		xs := mibs[t.name]
		m := median(xs)
		hwm, cpu := servingStatus(t)
		e.printf("| %s | %.0f | %.0f | %.0f | %.2f | %.2f | %.0f |\n", t.name, m, minf(xs), maxf(xs),
			float64(l.Size)/MiB/m, (cpu-cpu0[t.name])/float64(reps), float64(hwm)/MiB)
	}
	b, n, d := median(mibs["berth"]), median(mibs["nginx"]), median(mibs["distribution proxy"])
	e.printf("\nberth/nginx = %.2f, berth/distribution-proxy = %.2f; upstream blob GETs during the timed GETs: %d\n",
		b/n, b/d, e.up.blobGets.Load())
	return nil
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

// coldResult is one cold run of one system.
type coldResult struct {
	wall          float64
	upBytes, gets int64
	hwm           int64
	cpu           float64
}

// benchCold has clients concurrent clients GET one cold blob from a fresh
// berth and a fresh distribution proxy, reps times each.
func benchCold(ctx context.Context, e *env, img *image, clients, reps int) error {
	l := img.Layers[0]
	res := map[string][]coldResult{}
	names := []string{"berth", "distribution proxy"}
	for r := range reps {
		for _, name := range names {
			dir := filepath.Join(e.work, fmt.Sprintf("cold-%d-%s", r, name[:4]))
			var p *proc
			var addr string
			var err error
			if name == "berth" {
				p, addr, err = startBerth(ctx, e.berth, dir, "berth", e.up.Addr, nil)
			} else {
				p, addr, err = startRegistry(ctx, e.registry, dir, "dist-proxy", "http://"+e.up.Addr)
			}
			if err != nil {
				return err
			}
			e.up.reset()
			stopPerf := func() {}
			if name == "berth" && r == 0 {
				stopPerf = e.perf(ctx, p, "cold")
			}
			wall, err := concurrently(clients, func(i int) error {
				want := ""
				if i == 0 {
					want = l.Digest
				}
				n, err := get(ctx, blobURL(addr, img.Repo, l.Digest), want)
				if err == nil && n != l.Size {
					err = fmt.Errorf("client %d: %d bytes", i, n)
				}
				return err
			})
			stopPerf()
			hwm, cpu := p.status()
			p.stop(10 * time.Second)
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("cold %s: %w", name, err)
			}
			res[name] = append(res[name], coldResult{wall, e.up.blobBytes.Load(), e.up.blobGets.Load(), hwm, cpu})
			fmt.Printf("cold rep %d %s: %.2fs upstream %d MiB (%d GETs) RSS %d MiB CPU %.1fs\n", r, name, wall,
				e.up.blobBytes.Load()/MiB, e.up.blobGets.Load(), hwm/MiB, cpu)
		}
	}
	e.printf("\n### %d concurrent clients, one cold %d MiB blob, fresh cache and process per run, %d runs (load avg %s)\n\n", clients, l.Size/MiB, reps, loadavg())
	e.printf("| server | median wall s | runs (s) | upstream blob bytes (x blob) | upstream blob GETs | peak RSS MiB (median) | CPU s (median) |\n|---|---|---|---|---|---|---|\n")
	for _, name := range names {
		var walls, ups, gets, hwms, cpus []float64
		for _, c := range res[name] {
			walls = append(walls, c.wall)
			ups = append(ups, float64(c.upBytes)/float64(l.Size))
			gets = append(gets, float64(c.gets))
			hwms = append(hwms, float64(c.hwm)/MiB)
			cpus = append(cpus, c.cpu)
		}
		e.printf("| %s | %.2f | %s | %.2f | %.0f | %.0f | %.1f |\n", name, median(walls), fmtList(walls), median(ups), median(gets), median(hwms), median(cpus))
	}
	return nil
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

func minf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
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
