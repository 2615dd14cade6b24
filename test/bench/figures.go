//go:build bench

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	berthName = "berth"
	proxyName = "distribution proxy"
	floorName = "Go net/http file server"
)

// startServer starts a fresh berth or distribution proxy (name) with its
// cache under dir, in front of the counting upstream.
func startServer(ctx context.Context, e *env, name, dir string) (*proc, string, error) {
	return startServerOf(ctx, e, name, dir, e.up.Addr)
}

// startServerOf is startServer with the upstream at upAddr (host:port).
func startServerOf(ctx context.Context, e *env, name, dir, upAddr string) (*proc, string, error) {
	if name == berthName {
		return startBerth(ctx, e.berth, dir, "berth", upAddr, nil)
	}
	return startRegistry(ctx, e.registry, dir, "dist-proxy", "http://"+upAddr)
}

// timedGet GETs url once, timed, and checks the byte count.
func timedGet(ctx context.Context, url string, size int64) (float64, error) {
	t0 := time.Now()
	n, err := get(ctx, url, "")
	dt := time.Since(t0).Seconds()
	if err == nil && n != size {
		err = fmt.Errorf("GET %s: %d bytes, want %d", url, n, size)
	}
	return dt, err
}

// benchCold1: one client GETs the cold blob from a fresh berth and a fresh
// distribution proxy, against the same GET straight from the upstream
// (through the same counting proxy); direct, berth, proxy in every round.
func benchCold1(ctx context.Context, e *env, o *opts, rep *report, img *image) error {
	l := img.Layers[0]
	direct := blobURL(e.up.Addr, img.Repo, l.Digest)
	if _, err := get(ctx, direct, l.Digest); err != nil { // the upstream's files in the page cache, as for every later GET
		return err
	}
	times := map[string][]float64{}
	cpus := map[string][]cpuUse{}
	var gets []float64
	for r := range o.rounds {
		dt, cpu, err := cpuTimedGet(ctx, direct, l.Size, e.upProc, nil)
		if err != nil {
			return err
		}
		times["direct"] = append(times["direct"], dt)
		cpus["direct"] = append(cpus["direct"], cpu)
		fmt.Printf("cold1 round %d: direct %s\n", r, cpu)
		for _, name := range []string{berthName, proxyName} {
			dir := filepath.Join(e.work, fmt.Sprintf("cold1-%d-%s", r, name[:4]))
			p, addr, err := startServer(ctx, e, name, dir)
			if err != nil {
				return err
			}
			e.up.reset()
			url := blobURL(addr, img.Repo, l.Digest)
			dt, cpu, err := cpuTimedGet(ctx, url, l.Size, e.upProc, p)
			ups := e.up.blobGets.Load()
			if err == nil {
				_, err = get(ctx, url, l.Digest) // what it served and kept is the blob
			}
			p.stop(10 * time.Second)
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			times[name] = append(times[name], dt)
			cpus[name] = append(cpus[name], cpu)
			if name == berthName {
				gets = append(gets, float64(ups))
			}
			fmt.Printf("cold1 round %d: direct %.3fs, %s %.3fs (%d upstream blob GETs)\n", r, times["direct"][r], name, dt, ups)
			fmt.Printf("cold1 round %d: %s %s\n", r, name, cpu)
		}
	}
	med := map[string]cpuUse{}
	for name, runs := range cpus {
		med[name] = medianCPU(runs)
	}
	fmt.Printf("cold1 CPU seconds per GET, medians:\n%s", cpuSummary(med))
	b, p, d := median(times[berthName]), median(times[proxyName]), median(times["direct"])
	hash := hashSeconds(l.Size)
	fmt.Printf("cold1: SHA-256 of %d MiB on one thread: %.3f s (%.0f MB/s); direct %.3f s\n", l.Size/MiB, hash, float64(l.Size)/hash/1e6, d)
	times["SHA-256 s, one thread"] = []float64{hash}
	rep.add(&row{
		ID: "cold1", Label: fmt.Sprintf("Cold %d MiB GET, one client", l.Size/MiB), Figure: fmt.Sprintf("cold %d MiB GET, one client: time ÷ direct from upstream", l.Size/MiB), Unit: "s",
		Berth: b, BerthNote: fmt.Sprintf("%.0f upstream GET", maxf(gets)), Proxy: ptr(p), RefName: "direct", Reference: ptr(d),
		RatioOf: "berth time ÷ direct time", Ratio: b / d, ProxyRatio: ptr(p / d),
		Target: "≤ 1.10", TargetOp: "<=", TargetVal: 1.10, Samples: times, CPU: med,
	})
	return nil
}

// coldRun is one cold run of one server.
type coldRun struct {
	wall          float64
	upBytes, gets int64
	hwm           int64
	cpu           float64
}

// coldClients starts a fresh server (name) and has n clients GET the
// cold blob at once through hc (released together); client 0 checks the
// digest.
func coldClients(ctx context.Context, e *env, hc *http.Client, name, dir string, l blob, repo string, n, bufSize int, perf string) (coldRun, error) {
	start := startServer
	if name == floorName {
		start = func(ctx context.Context, e *env, _, dir string) (*proc, string, error) {
			return startGoFloor(ctx, e.gofloor, dir, l.Path)
		}
	}
	p, addr, err := start(ctx, e, name, dir)
	if err != nil {
		return coldRun{}, err
	}
	defer os.RemoveAll(dir)
	e.up.reset()
	stopPerf := func() {}
	if perf != "" && name == berthName {
		stopPerf = e.perf(ctx, p, perf)
	}
	if (e.pprofDir != "" || e.smaps) && name != proxyName {
		label := fmt.Sprintf("%s-%d-clients", strings.Fields(name)[0], n)
		done, sampled := make(chan struct{}), make(chan struct{})
		defer func() { <-sampled }()
		defer close(done)
		if e.pprofDir != "" && name == berthName {
			go e.profileHalfway(ctx, p, l.Size, label, done)
		}
		go func() {
			defer close(sampled)
			samplePeak(ctx, p.pid(), e.pprofDir, label, done)
		}()
	}
	wall, err := concurrently(n, func(i int) error {
		want := ""
		if i == 0 {
			want = l.Digest
		}
		got, err := getSized(ctx, hc, blobURL(addr, repo, l.Digest), want, bufSize)
		if err == nil && got != l.Size {
			err = fmt.Errorf("client %d: %d bytes", i, got)
		}
		return err
	})
	stopPerf()
	hwm, cpu := p.status()
	p.stop(10 * time.Second)
	if err != nil {
		return coldRun{}, fmt.Errorf("%s: %w", name, err)
	}
	c := coldRun{wall, e.up.blobBytes.Load(), e.up.blobGets.Load(), hwm, cpu}
	fmt.Printf("%d cold clients %s: %.2fs upstream %d MiB (%d GETs) RSS %.1f MiB CPU %.1fs\n", n, name, wall,
		c.upBytes/MiB, c.gets, float64(hwm)/MiB, cpu)
	return c, nil
}

// benchCold: o.clients concurrent clients GET the cold blob from a fresh
// berth and a fresh distribution proxy, alternately, o.rounds times each;
// the wall time, the upstream GETs and the server's peak RSS.
func benchCold(ctx context.Context, e *env, o *opts, rep *report, img *image) error {
	l := img.Layers[0]
	walls, hwms := map[string][]float64{}, map[string][]float64{}
	gets, cpus := map[string][]float64{}, map[string][]float64{}
	for r := range o.rounds {
		for _, name := range []string{berthName, proxyName} {
			perf := ""
			if r == 0 {
				perf = "cold"
			}
			dir := filepath.Join(e.work, fmt.Sprintf("cold-%d-%s", r, name[:4]))
			c, err := coldClients(ctx, e, client, name, dir, l, img.Repo, o.clients, 1<<20, perf)
			if err != nil {
				return err
			}
			walls[name] = append(walls[name], c.wall)
			hwms[name] = append(hwms[name], float64(c.hwm)/MiB)
			gets[name] = append(gets[name], float64(c.gets))
			cpus[name] = append(cpus[name], c.cpu)
		}
	}
	b, p := median(walls[berthName]), median(walls[proxyName])
	bg := maxf(gets[berthName])
	rep.add(&row{
		ID: "cold32", Label: fmt.Sprintf("%d cold clients of one %d MiB blob", o.clients, l.Size/MiB), Figure: fmt.Sprintf("%d concurrent cold clients of one %d MiB blob: wall", o.clients, l.Size/MiB), Unit: "s",
		Berth: b, BerthNote: fmt.Sprintf("%.0f upstream GET(s)", bg), Proxy: ptr(p), ProxyNote: fmt.Sprintf("%.0f upstream GETs", median(gets[proxyName])),
		RatioOf: "berth wall ÷ proxy wall", Ratio: b / p, ProxyRatio: ptr(1),
		Target: "≤ 0.50", TargetOp: "<=", TargetVal: 0.5, Cond: "1 upstream GET", CondOK: bg == 1,
		Samples: map[string][]float64{berthName: walls[berthName], proxyName: walls[proxyName],
			"berth upstream GETs": gets[berthName], "proxy upstream GETs": gets[proxyName],
			"berth CPU s": cpus[berthName], "proxy CPU s": cpus[proxyName]},
	})
	hb, hp := median(hwms[berthName]), median(hwms[proxyName])
	rep.add(&row{
		ID: "rss32", Label: fmt.Sprintf("Peak RSS, %d cold clients", o.clients), Figure: fmt.Sprintf("peak RSS, %d cold clients", o.clients), Unit: "MiB",
		Berth: hb, Proxy: ptr(hp), RatioOf: "berth peak RSS, MiB", Ratio: hb, ProxyRatio: ptr(hp),
		Target: "≤ 32 MiB", TargetOp: "<=", TargetVal: 32, Samples: hwms,
	})
	return nil
}

// benchRSS: o.rssClients concurrent clients of one cold blob through a
// fresh berth; its peak RSS (VmHWM) afterwards. The clients have receive
// buffers of their own size (farClient), not grown by the server's host.
func benchRSS(ctx context.Context, e *env, o *opts, rep *report, img *image) error {
	l := img.Layers[0]
	dir := filepath.Join(e.work, "rss")
	c, err := coldClients(ctx, e, farClient, berthName, dir, l, img.Repo, o.rssClients, 64<<10, "")
	if err != nil {
		return err
	}
	h := float64(c.hwm) / MiB
	w := &row{
		ID: "rss500", Label: fmt.Sprintf("Peak RSS, %d cold clients", o.rssClients), Figure: fmt.Sprintf("peak RSS, %d cold clients of one %d MiB blob", o.rssClients, l.Size/MiB), Unit: "MiB",
		Berth: h, BerthNote: fmt.Sprintf("wall %.1f s, %d upstream GET(s)", c.wall, c.gets), RatioOf: "berth peak RSS, MiB", Ratio: h,
		Target: "≤ 32 MiB", TargetOp: "<=", TargetVal: 32, Samples: map[string][]float64{berthName: {h}},
	}
	if e.gofloor != "" {
		// The same clients, served the blob's file by the smallest
		// net/http server: the memory any Go server on net/http needs for
		// them, whatever it does besides.
		f, err := coldClients(ctx, e, farClient, floorName, filepath.Join(e.work, "rss-floor"), l, img.Repo, o.rssClients, 64<<10, "")
		if err != nil {
			return err
		}
		fh := float64(f.hwm) / MiB
		w.RefName, w.Reference, w.RefNote = floorName, ptr(fh), fmt.Sprintf("wall %.1f s", f.wall)
		w.Samples[floorName] = []float64{fh}
	}
	rep.add(w)
	return nil
}

// benchWarm: the hit (nginx serving the pushed file vs berth and the
// proxy serving the cached blob, interleaved) and the manifest req/s by
// tag and by digest (wrk, o.wrkConns connections) against nginx serving
// the manifest's bytes as a static file, with one long-lived process each.
func benchWarm(ctx context.Context, e *env, o *opts, rep *report, img *image, data string) error {
	l := img.Layers[0]
	dir := filepath.Join(e.work, "warm")
	defer os.RemoveAll(dir)
	man, err := os.ReadFile(img.ManifestPath)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(data, "small.json"), man, 0o644); err != nil {
		return err
	}
	ng, ngAddr, err := startNginx(ctx, e.nginx, filepath.Join(dir, "nginx"), data)
	if err != nil {
		return err
	}
	defer ng.stop(5 * time.Second)
	ts := []target{{name: "nginx", p: ng, url: fmt.Sprintf("http://%s/%s", ngAddr, filepath.Base(l.Path))}}
	addrs := map[string]string{}
	for _, name := range []string{berthName, proxyName} {
		p, addr, err := startServer(ctx, e, name, filepath.Join(dir, name[:4]))
		if err != nil {
			return err
		}
		defer p.stop(10 * time.Second)
		addrs[name] = addr
		ts = append(ts, target{name: name, p: p, url: blobURL(addr, img.Repo, l.Digest)})
	}
	if e.gofloor != "" && o.figures["hit"] {
		// The smallest Go server on net/http serving the same file (Go's
		// own sendfile path): what a Go server gets without berth's send.
		p, addr, err := startGoFloor(ctx, e.gofloor, filepath.Join(dir, "gofloor"), l.Path)
		if err != nil {
			return err
		}
		defer p.stop(5 * time.Second)
		ts = append(ts, target{name: floorName, p: p, url: "http://" + addr + "/" + filepath.Base(l.Path)})
	}
	for _, t := range ts { // the first GET fills the cache (verified), the second checks it
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
	if o.figures["hit"] {
		e.up.reset()
		cpu0 := map[string]float64{}
		for _, t := range ts {
			_, cpu0[t.name] = servingStatus(t)
		}
		stopPerf := e.perf(ctx, ts[1].p, "hit")
		times := map[string][]float64{}
		for i := range o.rounds * 9 { // a hit is short (0.1 s): nine GETs a round, for a steady median
			// Each round starts with the next target: a fixed order would
			// give one server the moments after another's GET (its
			// garbage collection, its socket teardown) every time.
			for k := range ts {
				t := ts[(i+k)%len(ts)]
				dt, err := timedGet(ctx, t.url, l.Size)
				if err != nil {
					return err
				}
				times[t.name] = append(times[t.name], dt)
			}
		}
		stopPerf()
		ups := e.up.blobGets.Load()
		cpu := map[string]string{}
		for _, t := range ts { // the serving process's CPU per GET: where a gap in time comes from
			_, c := servingStatus(t)
			per := (c - cpu0[t.name]) / float64(len(times[t.name]))
			cpu[t.name] = fmt.Sprintf("CPU %.3f s/GET", per)
			times[t.name+" CPU s per GET"] = []float64{per}
		}
		n, b, p := median(times["nginx"]), median(times[berthName]), median(times[proxyName])
		fmt.Printf("hit: nginx %.3fs, berth %.3fs, proxy %.3fs; upstream blob GETs %d\n", n, b, p, ups)
		if fl := times[floorName]; len(fl) > 0 {
			fmt.Printf("hit: %s %.3fs (%s), nginx time ÷ its time %.2f, per round: %s\n", floorName, median(fl), cpu[floorName], n/median(fl), spread(times["nginx"], fl))
		}
		fmt.Printf("hit: nginx time ÷ berth time per round: %s\n", spread(times["nginx"], times[berthName]))
		rep.add(&row{
			ID: "hit", Label: fmt.Sprintf("%d MiB hit, one client", l.Size/MiB), Figure: fmt.Sprintf("%d MiB hit, one client: nginx time ÷ server time", l.Size/MiB), Unit: "s",
			Berth: b, BerthNote: cpu[berthName], Proxy: ptr(p), ProxyNote: cpu[proxyName], RefName: "nginx", RefNote: cpu["nginx"], Reference: ptr(n),
			RatioOf: "nginx time ÷ berth time", Ratio: n / b, ProxyRatio: ptr(n / p),
			Target: "≥ 0.95", TargetOp: ">=", TargetVal: 0.95, Cond: "0 upstream GETs", CondOK: ups == 0, Samples: times,
		})
	}
	if !o.figures["manifest"] {
		return nil
	}
	// The manifests, fetched once by tag and once by digest (berth fills
	// them, the proxy too); then wrk runs interleaved: nginx's static copy,
	// berth by tag, proxy by tag, berth by digest, proxy by digest.
	tagURL := map[string]string{}
	digURL := map[string]string{}
	for _, name := range []string{berthName, proxyName} {
		tagURL[name] = manifestURL(addrs[name], img.Repo, img.Tag)
		d, body, err := getManifest(ctx, tagURL[name])
		if err != nil {
			return err
		}
		if string(body) != string(man) || d != img.ManifestDigest {
			return fmt.Errorf("%s: manifest by tag is %s (%d bytes), want %s (%d bytes)", name, d, len(body), img.ManifestDigest, len(man))
		}
		digURL[name] = manifestURL(addrs[name], img.Repo, img.ManifestDigest)
		if _, _, err := getManifest(ctx, digURL[name]); err != nil {
			return err
		}
	}
	static := fmt.Sprintf("http://%s/small.json", ngAddr)
	rps := map[string][]float64{}
	upReqs := map[string][]float64{}
	for r := range o.rounds {
		x, err := e.runWrk(ctx, static, o)
		if err != nil {
			return err
		}
		rps["nginx"] = append(rps["nginx"], x)
		for _, by := range []string{"tag", "digest"} {
			for _, name := range []string{berthName, proxyName} {
				url := tagURL[name]
				if by == "digest" {
					url = digURL[name]
				}
				if _, _, err := getManifest(ctx, url); err != nil { // within tagTTL for the run
					return err
				}
				e.up.quiesce()
				x, err := e.runWrk(ctx, url, o)
				if err != nil {
					return fmt.Errorf("%s by %s: %w", name, by, err)
				}
				k := name + " by " + by
				rps[k] = append(rps[k], x)
				upReqs[k] = append(upReqs[k], float64(e.up.reqs.Load()))
				fmt.Printf("manifest round %d: nginx %.0f req/s, %s %.0f req/s, %d upstream requests\n", r, rps["nginx"][r], k, x, e.up.reqs.Load())
			}
		}
	}
	n := median(rps["nginx"])
	for _, by := range []string{"tag", "digest"} {
		bk, pk := berthName+" by "+by, proxyName+" by "+by
		b, p := median(rps[bk]), median(rps[pk])
		bu := maxf(upReqs[bk])
		rep.add(&row{
			ID: "manifest_" + by, Label: fmt.Sprintf("Manifest by %s, %d connections", by, o.wrkConns),
			Figure: fmt.Sprintf("manifest by %s, %d connections: req/s ÷ nginx's req/s for the same %d bytes as a static file", by, o.wrkConns, len(man)), Unit: "req/s",
			Berth: b, BerthNote: fmt.Sprintf("%.0f upstream requests", bu), Proxy: ptr(p), ProxyNote: fmt.Sprintf("%.0f upstream requests", median(upReqs[pk])),
			RefName: fmt.Sprintf("nginx %d B file", len(man)), Reference: ptr(n),
			RatioOf: "berth req/s ÷ nginx req/s", Ratio: b / n, ProxyRatio: ptr(p / n),
			Target: "≥ 0.70", TargetOp: ">=", TargetVal: 0.7, Cond: "0 upstream requests", CondOK: bu == 0,
			Samples: map[string][]float64{"nginx": rps["nginx"], berthName: rps[bk], proxyName: rps[pk],
				"berth upstream requests": upReqs[bk], "proxy upstream requests": upReqs[pk]},
		})
	}
	return nil
}

// runWrk runs wrk (2 threads, o.wrkConns connections, o.wrkDur) on url
// with containerd's manifest Accept header and returns its requests per
// second; any non-2xx answer fails the run. Socket errors (a slow answer
// on a loaded machine counts as a timeout) are only printed.
func (e *env) runWrk(ctx context.Context, url string, o *opts) (float64, error) {
	out, err := runCmd(ctx, o.wrkDur+time.Minute, e.wrk, "-t2", fmt.Sprintf("-c%d", o.wrkConns),
		fmt.Sprintf("-d%ds", max(1, int(o.wrkDur.Seconds()))), "--timeout", "30s", "-H", "Accept: "+manifestAccept, url)
	if err != nil {
		return 0, err
	}
	var rps float64
	var errs []string
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if v, ok := strings.CutPrefix(line, "Requests/sec:"); ok {
			rps, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
		if strings.HasPrefix(line, "Non-2xx") {
			errs = append(errs, line)
		}
		if strings.HasPrefix(line, "Socket errors") {
			fmt.Printf("wrk %s: %s\n", url, line)
		}
	}
	if rps <= 0 || len(errs) > 0 {
		return rps, fmt.Errorf("wrk %s: %.0f req/s, %s:\n%s", url, rps, strings.Join(errs, "; "), out)
	}
	return rps, nil
}

// runCmd runs a short-lived tool in its own process group (killed with
// the group when ctx ends or after limit, and with us: Pdeathsig) and
// returns its combined output.
func runCmd(ctx context.Context, limit time.Duration, bin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	b, err := cmd.CombinedOutput()
	if err != nil {
		return string(b), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, b)
	}
	return string(b), nil
}

// profileHalfway saves berth's heap and goroutine profiles (its admin
// listener's /debug/pprof) once the upstream has sent half of a blob of
// size bytes: the clients are then all reading the blob in flight.
func (e *env) profileHalfway(ctx context.Context, p *proc, size int64, name string, done <-chan struct{}) {
	for e.up.live.Load() < size/2 {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
	for _, prof := range []string{"heap?gc=1", "goroutine", "heap?debug=1"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.admin+"/debug/pprof/"+prof, nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println("pprof:", err)
			return
		}
		file := filepath.Join(e.pprofDir, name+"."+strings.TrimSuffix(prof, "?gc=1")+".pb.gz")
		if prof == "heap?debug=1" {
			file = filepath.Join(e.pprofDir, name+".memstats.txt")
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			err = os.WriteFile(file, b, 0o644)
		} else if err == nil {
			err = fmt.Errorf("%s: %s", req.URL, resp.Status)
		}
		if err != nil {
			fmt.Println("pprof:", err)
			return
		}
		hwm, _ := p.status()
		fmt.Printf("pprof: %s (berth VmHWM so far %.1f MiB)\n", file, float64(hwm)/MiB)
		if prof == "heap?debug=1" {
			fmt.Print(memstatsSummary(string(b)))
		}
	}
}
