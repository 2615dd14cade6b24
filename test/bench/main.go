//go:build bench

// Command bench measures berth against nginx and distribution's registry in
// proxy mode, all on 127.0.0.1, with a distribution registry as upstream
// behind a byte-counting proxy. Not part of go test; run.sh builds and runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

func main() {
	var e env
	flag.StringVar(&e.berth, "berth", "", "berth binary")
	flag.StringVar(&e.registry, "registry", "", "distribution registry binary")
	flag.StringVar(&e.nginx, "nginx", "/usr/sbin/nginx", "nginx binary")
	flag.StringVar(&e.work, "work", "", "work directory (data, caches, logs)")
	flag.StringVar(&e.perfDir, "perf", "", "directory for perf record profiles of berth (cached GETs, cold runs)")
	scen := flag.String("scenario", "all", "cached, cold, cluster or all (comma separated)")
	cachedReps := flag.Int("cached-reps", 5, "timed GETs per server")
	coldReps := flag.Int("cold-reps", 3, "cold runs per server")
	clients := flag.Int("clients", 32, "concurrent clients of the cold blob")
	clusterReps := flag.Int("cluster-reps", 2, "cold runs per cluster setup")
	par := flag.Int("pull-parallel", 3, "blobs a cluster client pulls at once (containerd's default is 3)")
	timeout := flag.Duration("timeout", 40*time.Minute, "bound on the whole run")
	setups := flag.String("cluster-setups", "berth peers,berth alone,distribution proxy", "cluster setups to run (comma separated)")
	rate := flag.Float64("upstream-mibps", 0, "cap the upstream link (all responses together) at this many MiB/s; 0 = no cap")
	out := flag.String("out", "", "also write the result tables to this file")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	err := run(ctx, &e, strings.Split(*setups, ","), *rate, *scen, *cachedReps, *coldReps, *clients, *clusterReps, *par)
	stop()
	cancel()
	stopAll()
	if *out != "" && e.out != nil {
		os.WriteFile(*out, []byte(e.out.String()), 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, e *env, setups []string, rate float64, scen string, cachedReps, coldReps, clients, clusterReps, par int) error {
	e.out = &strings.Builder{}
	if e.berth == "" || e.registry == "" || e.work == "" {
		return fmt.Errorf("-berth, -registry and -work are required")
	}
	want := map[string]bool{}
	for _, s := range strings.Split(scen, ",") {
		want[s] = true
	}
	all := want["all"]
	data := filepath.Join(e.work, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	up, upAddr, err := startRegistry(ctx, e.registry, filepath.Join(e.work, "upstream"), "upstream", "")
	if err != nil {
		return err
	}
	defer up.stop(10 * time.Second)
	e.up = newCounter(upAddr, rate)
	if rate > 0 {
		e.printf("\nupstream link capped at %.0f MiB/s (all responses together)\n", rate)
	}
	defer e.up.srv.Close()
	push := func(repo string, n int, size int64, seed uint64) (*image, error) {
		t0 := time.Now()
		img, err := makeImage(ctx, data, upAddr, repo, n, size, seed)
		fmt.Printf("pushed %s: %d x %d MiB in %.1fs\n", repo, n, size/MiB, time.Since(t0).Seconds())
		return img, err
	}
	if all || want["cached"] {
		img, err := push("bench/big", 1, 1024*MiB, 1)
		if err != nil {
			return err
		}
		if err := benchCached(ctx, e, img, cachedReps); err != nil {
			return fmt.Errorf("cached: %w", err)
		}
	}
	if all || want["cold"] {
		img, err := push("bench/cold", 1, 256*MiB, 2)
		if err != nil {
			return err
		}
		if err := benchCold(ctx, e, img, clients, coldReps); err != nil {
			return fmt.Errorf("cold: %w", err)
		}
	}
	if all || want["cluster"] {
		img, err := push("bench/multi", 8, 128*MiB, 3)
		if err != nil {
			return err
		}
		if err := benchCluster(ctx, e, img, 5, par, clusterReps, setups); err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	return nil
}
