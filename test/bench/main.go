//go:build bench

// Command bench measures berth against distribution's registry in proxy
// mode and against the reference (a direct GET from the upstream, nginx
// serving the same bytes), all on 127.0.0.1, with a distribution registry
// as upstream behind a byte-counting proxy. It prints one table of every
// figure (and writes it as JSON and as an SVG chart). Not part of go test;
// run.sh builds and runs it; test/run.sh runs it once with -smoke.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// opts are the suite's sizes and counts.
type opts struct {
	figures     map[string]bool
	rounds      int
	blobMiB     int // the cold and hit blob
	clients     int // concurrent cold clients
	rssClients  int
	rssBlobMiB  int
	wrkConns    int
	wrkDur      time.Duration
	layers      int // the containerd image
	layerMiB    int
	nodes       int // the cluster scenario
	clLayers    int
	clLayerMiB  int
	clusterReps int
	par         int
	setups      []string
	rate        float64
	wan         wan // the -wan containerd rows' upstream
	smoke       bool
}

// allFigures are the -figures names, in the table's order.
var allFigures = []string{"cold1", "cold32", "hit", "manifest", "rss500", "containerd", "containerd2", "containerd-wan", "containerd2-wan", "cluster"}

// init asks for SIGTERM when the process that started the bench (run.sh's
// timeout) dies, even by SIGKILL: the bench then stops every process it
// started, as on Ctrl-C. init runs on the main thread, which lives as long
// as the process (the setting is the calling thread's).
func init() {
	ppid := os.Getppid()
	syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	if os.Getppid() != ppid { // the parent died before the call
		os.Exit(1)
	}
}

func main() {
	var e env
	var o opts
	flag.StringVar(&e.berth, "berth", "", "berth binary")
	flag.StringVar(&e.registry, "registry", "", "distribution registry binary")
	flag.StringVar(&e.nginx, "nginx", "/usr/sbin/nginx", "nginx binary")
	flag.StringVar(&e.gofloor, "gofloor", "", "the Go floor server (test/bench/gofloor): the peak-RSS row's reference, the same clients served a file by the smallest net/http server; empty: no reference")
	flag.StringVar(&e.wrk, "wrk", "wrk", "wrk binary (manifest req/s)")
	flag.StringVar(&e.containerd, "containerd", "containerd", "containerd binary (the pull figure)")
	flag.StringVar(&e.ctr, "ctr", "ctr", "ctr binary of that containerd")
	flag.StringVar(&e.containerd2, "containerd2", "", "directory of containerd 2.x's containerd and ctr (the containerd2 figure)")
	flag.StringVar(&e.work, "work", "", "work directory (data, caches, logs)")
	flag.StringVar(&e.perfDir, "perf", "", "directory for perf record profiles of berth (hit GETs, cold runs, cluster)")
	flag.StringVar(&e.timeline, "timeline", "", "directory for a per-blob timeline of every containerd pull (upstream GETs; berth's prefetches, fills and client requests, from its debug log)")
	flag.StringVar(&e.clusterLogs, "cluster-logs", "", "directory for the berth nodes' debug logs of every cluster run (one subdirectory per run), to find why a node went upstream")
	flag.StringVar(&e.clusterIdle, "cluster-idle-timeout", "", "peers.idleTimeout of the cluster nodes (a short one makes a parent slowed by the load stall, to check that no stall sends a byte upstream twice); empty keeps the default")
	flag.DurationVar(&e.clusterPause, "cluster-pause", 0, "during each berth cluster pull, stop (SIGSTOP) one node in turn this long every 5 s, as a machine too loaded to run it would (keep it under gossip's failure detection, ~2.5 s, or the node is dropped as dead)")
	flag.StringVar(&e.pprofDir, "pprof", "", "directory for berth's heap (after a GC: gc=1, so it shows what is live now, not at the last GC) and goroutine profiles and its MemStats (/debug/pprof) taken halfway through its cold runs (cold32, rss500), and -smaps' summary")
	flag.BoolVar(&e.smaps, "smaps", false, "print what berth's peak RSS in its cold runs (cold32, rss500) is made of: resident MiB per kind of mapping (/proc/PID/smaps: the binary's text and data, the Go heap, the rest), sampled as it grows")
	flag.StringVar(&e.rev, "rev", "", "berth revision, for the report")
	flag.StringVar(&e.command, "command", "", "the command line, for the report")
	figs := flag.String("figures", "all", "figures to measure, comma separated: "+strings.Join(allFigures, ", ")+" or all")
	scen := flag.String("scenario", "", "old name of -figures (cached = hit, cold = cold32)")
	flag.BoolVar(&o.smoke, "smoke", false, "CI smoke mode: tiny blobs, one round, short load runs; checks the suite works, not the figures")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds per figure (berth, proxy, reference, berth, ...)")
	flag.IntVar(&o.blobMiB, "blob-mib", 256, "size of the cold and hit blob, MiB")
	flag.IntVar(&o.clients, "clients", 32, "concurrent clients of the cold blob")
	flag.IntVar(&o.rssClients, "rss-clients", 500, "concurrent cold clients of the peak-RSS run")
	flag.IntVar(&o.rssBlobMiB, "rss-blob-mib", 64, "size of the peak-RSS run's blob, MiB")
	flag.IntVar(&o.wrkConns, "conns", 32, "connections of the manifest req/s runs")
	flag.DurationVar(&o.wrkDur, "duration", 5*time.Second, "length of each manifest req/s run")
	flag.IntVar(&o.layers, "layers", 10, "layers of the containerd image")
	flag.IntVar(&o.layerMiB, "layer-mib", 32, "size of each containerd image layer, MiB")
	flag.IntVar(&o.nodes, "nodes", 5, "nodes of the cluster scenario")
	flag.IntVar(&o.clLayers, "cluster-layers", 8, "layers of the cluster image")
	flag.IntVar(&o.clLayerMiB, "cluster-layer-mib", 128, "size of each cluster image layer, MiB")
	flag.IntVar(&o.clusterReps, "cluster-reps", 1, "cold runs per cluster setup")
	flag.IntVar(&o.par, "pull-parallel", 3, "blobs a cluster client pulls at once (containerd's default is 3)")
	timeout := flag.Duration("timeout", 40*time.Minute, "bound on the whole run")
	setups := flag.String("cluster-setups", "berth peers,berth alone,distribution proxy", "cluster setups to run (comma separated)")
	flag.Float64Var(&o.rate, "upstream-mibps", 0, "cap the upstream link (all responses together) at this many MiB/s; 0 = no cap")
	flag.DurationVar(&o.wan.RTT, "wan-rtt", 20*time.Millisecond, "containerd-wan rows: round trip added before each upstream answer and each new upstream connection")
	flag.Float64Var(&o.wan.ConnMBps, "wan-mbps", 100, "containerd-wan rows: each upstream response (one per connection at a time) capped at this many MB/s (10^6 bytes)")
	out := flag.String("out", "", "also write the tables (markdown) to this file")
	jsonOut := flag.String("json", "", "write the result table as JSON to this file")
	svgOut := flag.String("svg", "", "draw the result table as an SVG chart into this file")
	readme := flag.String("readme", "", "put the table (and links to the -svg chart and -json file) into this markdown file, between its <!-- bench:begin --> and <!-- bench:end --> lines")
	verify := flag.String("verify", "", "only check that this JSON result is well formed and has every figure of -figures (and, with -svg, that the chart is well-formed SVG naming every row); no run")
	flag.Parse()
	if *scen != "" {
		*figs = strings.NewReplacer("cached", "hit", "cold", "cold32").Replace(*scen)
	}
	o.figures = map[string]bool{}
	for _, f := range strings.Split(*figs, ",") {
		f = strings.TrimSpace(f)
		if f == "all" {
			for _, a := range allFigures {
				o.figures[a] = true
			}
			continue
		}
		if !contains(allFigures, f) {
			fmt.Fprintf(os.Stderr, "bench: unknown figure %q (want %s or all)\n", f, strings.Join(allFigures, ", "))
			os.Exit(2)
		}
		o.figures[f] = true
	}
	if *verify != "" {
		err := verifyReport(*verify, o.figures)
		if err == nil && *svgOut != "" {
			err = verifySVG(*svgOut, *verify)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: verify:", err)
			os.Exit(1)
		}
		fmt.Println("bench: verify:", *verify, *svgOut, "well formed, every figure present")
		return
	}
	if o.smoke {
		smokeSizes(&o)
		if !flagSet("timeout") {
			*timeout = 8 * time.Minute
		}
	}
	o.setups = strings.Split(*setups, ",")
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	rep, err := run(ctx, &e, &o)
	stop()
	cancel()
	stopAll()
	if rep != nil {
		md := rep.markdown()
		fmt.Print("\n" + md)
		if *out != "" {
			os.WriteFile(*out, []byte(md+e.out.String()), 0o644)
		}
		if *jsonOut != "" {
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			enc.SetIndent("", "  ")
			werr := enc.Encode(rep)
			if werr == nil {
				werr = os.WriteFile(*jsonOut, b.Bytes(), 0o644)
			}
			if werr != nil && err == nil {
				err = werr
			}
		}
		if *svgOut != "" {
			if werr := os.WriteFile(*svgOut, []byte(rep.svg()), 0o644); werr != nil && err == nil {
				err = werr
			}
		}
		if *readme != "" && err == nil {
			err = rep.intoMarkdown(*readme, *svgOut, *jsonOut)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// smokeSizes shrinks every size and count the user did not set, so the
// whole suite runs in a minute or two: it shows the suite works.
func smokeSizes(o *opts) {
	set := func(name string, p *int, v int) {
		if !flagSet(name) {
			*p = v
		}
	}
	set("rounds", &o.rounds, 1)
	set("blob-mib", &o.blobMiB, 4)
	set("clients", &o.clients, 32)
	set("rss-clients", &o.rssClients, 500)
	set("rss-blob-mib", &o.rssBlobMiB, 1)
	set("layers", &o.layers, 10)
	set("layer-mib", &o.layerMiB, 1)
	set("nodes", &o.nodes, 3)
	set("cluster-layers", &o.clLayers, 2)
	set("cluster-layer-mib", &o.clLayerMiB, 1)
	set("cluster-reps", &o.clusterReps, 1)
	if !flagSet("duration") {
		o.wrkDur = time.Second
	}
}

func flagSet(name string) bool {
	found := false
	flag.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// run measures the chosen figures, in the table's order; the report holds
// every row measured so far, also when a later figure fails.
func run(ctx context.Context, e *env, o *opts) (*report, error) {
	e.out = &strings.Builder{}
	if e.berth == "" || e.registry == "" || e.work == "" {
		return nil, fmt.Errorf("-berth, -registry and -work are required")
	}
	rep := newReport(e, o)
	data := filepath.Join(e.work, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return rep, err
	}
	up, upAddr, err := startRegistry(ctx, e.registry, filepath.Join(e.work, "upstream"), "upstream", "")
	if err != nil {
		return rep, err
	}
	defer up.stop(10 * time.Second)
	e.up = newCounter(upAddr, o.rate)
	e.upProc = up
	if e.timeline != "" {
		if err := os.MkdirAll(e.timeline, 0o755); err != nil {
			return rep, err
		}
		e.up.record = true
		berthLog = "log:\n  level: debug\n  format: json\n"
	}
	if e.clusterLogs != "" {
		if err := os.MkdirAll(e.clusterLogs, 0o755); err != nil {
			return rep, err
		}
		berthLog = "log:\n  level: debug\n  format: json\n"
	}
	if o.rate > 0 {
		e.printf("\nupstream link capped at %.0f MiB/s (all responses together)\n", o.rate)
	}
	defer e.up.srv.Close()
	push := func(repo string, n int, size int64, seed uint64) (*image, error) {
		t0 := time.Now()
		img, err := makeImage(ctx, data, upAddr, repo, n, size, seed)
		fmt.Printf("pushed %s: %d x %d KiB in %.1fs\n", repo, n, size>>10, time.Since(t0).Seconds())
		return img, err
	}
	f := o.figures
	var one *image // the cold and hit blob
	if f["cold1"] || f["cold32"] || f["hit"] || f["manifest"] {
		if one, err = push("bench/one", 1, int64(o.blobMiB)*MiB, 2); err != nil {
			return rep, err
		}
	}
	step := func(name string, fn func() error) error {
		t0 := time.Now()
		fmt.Printf("\n== %s\n", name)
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		fmt.Printf("== %s done in %.1fs (load avg %s)\n", name, time.Since(t0).Seconds(), loadavg())
		return nil
	}
	if f["cold1"] {
		if err := step("cold1", func() error { return benchCold1(ctx, e, o, rep, one) }); err != nil {
			return rep, err
		}
	}
	if f["cold32"] {
		if err := step("cold32", func() error { return benchCold(ctx, e, o, rep, one) }); err != nil {
			return rep, err
		}
	}
	if f["hit"] || f["manifest"] {
		if err := step("hit and manifest", func() error { return benchWarm(ctx, e, o, rep, one, data) }); err != nil {
			return rep, err
		}
	}
	if f["rss500"] {
		img, err := push("bench/rss", 1, int64(o.rssBlobMiB)*MiB, 4)
		if err != nil {
			return rep, err
		}
		if err := step("rss500", func() error { return benchRSS(ctx, e, o, rep, img) }); err != nil {
			return rep, err
		}
	}
	ctrd := func(id string, two bool, up *counter, w wan) error {
		k := ctrdKind{id: id, bin: e.containerd, ctr: e.ctr, config: containerdConfig, up: up, wan: w}
		if two {
			if e.containerd2 == "" {
				return fmt.Errorf("%s: -containerd2 DIR not set (test/tools.sh builds it)", id)
			}
			k.label, k.bin, k.ctr, k.config = " (parallel Range fetch)", filepath.Join(e.containerd2, "containerd"), filepath.Join(e.containerd2, "ctr"), containerd2Config
		}
		return step(id, func() error { return benchContainerd(ctx, e, o, rep, data, upAddr, k) })
	}
	if f["containerd"] {
		if err := ctrd("containerd", false, e.up, wan{}); err != nil {
			return rep, err
		}
	}
	if f["containerd2"] {
		if err := ctrd("containerd2", true, e.up, wan{}); err != nil {
			return rep, err
		}
	}
	if f["containerd-wan"] || f["containerd2-wan"] {
		// The same upstream registry behind a second counting proxy that
		// adds a round trip and a per-connection bandwidth cap: what a
		// mirror of Docker Hub or quay.io faces, unlike loopback.
		wanUp := newCounterWAN(upAddr, o.rate, o.wan)
		defer wanUp.srv.Close()
		e.printf("\ncontainerd-wan rows: upstream %s\n", o.wan)
		if wanUp.record = e.up.record; f["containerd-wan"] {
			if err := ctrd("containerd-wan", false, wanUp, o.wan); err != nil {
				return rep, err
			}
		}
		if f["containerd2-wan"] {
			if err := ctrd("containerd2-wan", true, wanUp, o.wan); err != nil {
				return rep, err
			}
		}
	}
	if f["cluster"] {
		img, err := push("bench/multi", o.clLayers, int64(o.clLayerMiB)*MiB, 3)
		if err != nil {
			return rep, err
		}
		if err := step("cluster", func() error { return benchCluster(ctx, e, o, rep, img) }); err != nil {
			return rep, err
		}
	}
	return rep, nil
}
