//go:build bench

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// node is one server of a 5-node setup.
type node struct {
	p    *proc
	addr string
}

// startNodes starts n nodes of one setup: "berth peers" (the default
// config), "berth peers striped" or "berth peers one tree" (peers.stripeSize
// 32MiB or off, whatever the default), "berth alone" or "distribution
// proxy"; a cluster is waited on until every node sees the others.
func startNodes(ctx context.Context, e *env, setup, dir string, n int) ([]node, error) {
	var nodes []node
	fail := func(err error) ([]node, error) {
		stopNodes(nodes)
		return nil, err
	}
	secret := filepath.Join(dir, "peer-secret")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(secret, []byte("bench-cluster-secret\n"), 0o600); err != nil {
		return nil, err
	}
	var seed string
	for i := range n {
		d := filepath.Join(dir, fmt.Sprintf("node%d", i))
		var p *proc
		var addr string
		var err error
		switch setup {
		case "distribution proxy":
			p, addr, err = startRegistry(ctx, e.registry, d, fmt.Sprintf("dist%d", i), "http://"+e.up.Addr)
		case "berth alone":
			p, addr, err = startBerth(ctx, e.berth, d, fmt.Sprintf("berth%d", i), e.up.Addr, nil)
		default:
			bind := freeAddr()
			if seed == "" {
				seed = bind
			}
			p, addr, err = startBerth(ctx, e.berth, d, fmt.Sprintf("berth%d", i), e.up.Addr,
				&peerOpts{Name: fmt.Sprintf("node%d", i), Bind: bind, Join: seed, SecretFile: secret, StripeSize: stripeSizes[setup], IdleTimeout: e.clusterIdle})
		}
		if err != nil {
			return fail(err)
		}
		nodes = append(nodes, node{p, addr})
	}
	if strings.HasPrefix(setup, "berth peers") {
		if err := waitPeers(ctx, nodes, n-1); err != nil {
			return fail(err)
		}
	}
	return nodes, nil
}

// pauseNodes stops (SIGSTOP) nodes 1, 2, ... in turn for d every 5 s
// until done is closed, and lets each go on (SIGCONT): a node that gets no
// CPU for d, as on a loaded machine, is a slow parent to its children.
func pauseNodes(nodes []node, d time.Duration, done <-chan struct{}) {
	for i := 1; ; i++ {
		select {
		case <-done:
			return
		case <-time.After(5*time.Second - d):
		}
		pid := nodes[i%len(nodes)].p.pid()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			fmt.Fprintln(os.Stderr, "pause:", err)
			return
		}
		time.Sleep(d) // the node gets no CPU: that is the point
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			fmt.Fprintln(os.Stderr, "pause:", err)
			return
		}
		fmt.Printf("paused node%d for %s\n", i%len(nodes), d)
	}
}

// keepLogs copies the node logs (*.log) under dir into to, flat.
func keepLogs(dir, to string) {
	if err := os.MkdirAll(to, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "cluster logs:", err)
		return
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err == nil {
			err = os.WriteFile(filepath.Join(to, filepath.Base(filepath.Dir(l))+"-"+filepath.Base(l)), b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "cluster logs:", err)
		}
	}
}

// stripeSizes are the cluster setups that set peers.stripeSize.
var stripeSizes = map[string]string{"berth peers striped": "32MiB", "berth peers one tree": "off"}

// waitPeers polls berth_peers on every node until each sees want others.
func waitPeers(ctx context.Context, nodes []node, want int) error {
	deadline := time.Now().Add(60 * time.Second)
	for _, nd := range nodes {
		for {
			v, err := metric(ctx, nd.p.admin, "berth_peers")
			if err == nil && int(v) == want {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: berth_peers %v (%v), want %d", nd.p.Name, v, err, want)
			}
			time.Sleep(100 * time.Millisecond) // polling an external process's gauge
		}
	}
	return nil
}

// perfNodes records a CPU profile of all nodes together, when -perf is set.
func (e *env) perfNodes(ctx context.Context, nodes []node, name string) func() {
	var pids []string
	for _, nd := range nodes {
		pids = append(pids, fmt.Sprint(nd.p.pid()))
	}
	return e.perfPIDs(ctx, strings.Join(pids, ","), name)
}

func stopNodes(nodes []node) {
	for _, nd := range nodes {
		nd.p.stop(10 * time.Second)
	}
}

// clusterResult is one run of one setup.
type clusterResult struct {
	wall, ratio      float64
	gets             int64
	hwm              int64 // max over nodes
	cpu              float64
	fromPeer, fromUp float64 // berth_fetched_bytes_total by source, summed over nodes
}

// benchCluster pulls img cold and at once through each of n nodes (one
// client per node), for each setup, reps times.
func benchCluster(ctx context.Context, e *env, o *opts, rep *report, img *image) error {
	n, par, reps, setups := o.nodes, o.par, o.clusterReps, o.setups
	res := map[string][]clusterResult{}
	for r := range reps {
		for si, setup := range setups {
			dir := filepath.Join(e.work, fmt.Sprintf("cluster-%d-%d", r, si))
			nodes, err := startNodes(ctx, e, setup, dir, n)
			if err != nil {
				return fmt.Errorf("%s: %w", setup, err)
			}
			e.up.reset()
			stopPerf := func() {}
			if r == 0 && setup != "distribution proxy" {
				stopPerf = e.perfNodes(ctx, nodes, "cluster-"+strings.ReplaceAll(setup, " ", "-"))
			}
			paused := make(chan struct{})
			pulled := make(chan struct{})
			go func() {
				defer close(paused)
				if e.clusterPause > 0 && strings.HasPrefix(setup, "berth peers") {
					pauseNodes(nodes, e.clusterPause, pulled)
				}
			}()
			wall, err := concurrently(n, func(i int) error { return pullImage(ctx, nodes[i].addr, img, par) })
			close(pulled)
			<-paused
			stopPerf()
			c := clusterResult{wall: wall, ratio: float64(e.up.blobBytes.Load()) / float64(img.Bytes), gets: e.up.blobGets.Load()}
			for _, nd := range nodes {
				hwm, cpu := nd.p.status()
				c.hwm = max(c.hwm, hwm)
				c.cpu += cpu
				if setup != "distribution proxy" {
					p, _ := metric(ctx, nd.p.admin, `berth_fetched_bytes_total{source="peer"`)
					u, _ := metric(ctx, nd.p.admin, `berth_fetched_bytes_total{source="upstream"`)
					c.fromPeer += p
					c.fromUp += u
				}
			}
			stopNodes(nodes)
			if e.clusterLogs != "" {
				keepLogs(dir, filepath.Join(e.clusterLogs, fmt.Sprintf("rep%d-%s", r, strings.ReplaceAll(setup, " ", "-"))))
			}
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s: %w", setup, err)
			}
			res[setup] = append(res[setup], c)
			fmt.Printf("cluster rep %d %s: %.2fs upstream/image %.2f (%d blob GETs) max RSS %d MiB CPU %.1fs peer %.0f MiB upstream %.0f MiB\n",
				r, setup, wall, c.ratio, c.gets, c.hwm/MiB, c.cpu, c.fromPeer/MiB, c.fromUp/MiB)
		}
	}
	e.printf("\n### %d nodes pull one cold %d MiB image (%d layers x %d MiB) at once, one client per node (%d blobs in parallel, digests verified), %d runs (load avg %s)\n\n",
		n, img.Bytes/MiB, len(img.Layers), img.Layers[0].Size/MiB, par, reps, loadavg())
	e.printf("| setup | median wall s | runs (s) | upstream blob bytes / image | upstream blob GETs | max node RSS MiB | CPU s all nodes | berth fetched from peers / upstream MiB |\n|---|---|---|---|---|---|---|---|\n")
	for _, setup := range setups {
		var walls, ratios, gets, hwms, cpus, fp, fu []float64
		for _, c := range res[setup] {
			walls = append(walls, c.wall)
			ratios = append(ratios, c.ratio)
			gets = append(gets, float64(c.gets))
			hwms = append(hwms, float64(c.hwm)/MiB)
			cpus = append(cpus, c.cpu)
			fp = append(fp, c.fromPeer/MiB)
			fu = append(fu, c.fromUp/MiB)
		}
		src := "-"
		if setup != "distribution proxy" {
			src = fmt.Sprintf("%.0f / %.0f", median(fp), median(fu))
		}
		e.printf("| %s | %.2f | %s | %.2f | %.0f | %.0f | %.1f | %s |\n", setup, median(walls), fmtList(walls),
			median(ratios), median(gets), median(hwms), median(cpus), src)
	}
	// The table's row: the cluster's upstream bytes per image (each blob
	// fetched once for all nodes) against the proxies'.
	ratios := map[string][]float64{}
	walls := map[string][]float64{}
	for _, setup := range setups {
		for _, c := range res[setup] {
			ratios[setup] = append(ratios[setup], c.ratio)
			walls[setup] = append(walls[setup], c.wall)
		}
	}
	peers := ratios["berth peers"]
	if len(peers) == 0 {
		return fmt.Errorf("the table's row needs the \"berth peers\" setup")
	}
	w := &row{
		ID: "cluster", Label: fmt.Sprintf("%d-node cluster, cold %d MiB image", n, img.Bytes/MiB), Figure: fmt.Sprintf("%d nodes pull a cold %d MiB image at once: upstream bytes ÷ image", n, img.Bytes/MiB), Unit: "× image",
		Berth: median(peers), BerthNote: fmt.Sprintf("wall %.1f s", median(walls["berth peers"])),
		RatioOf: "upstream blob bytes ÷ image bytes (berth peers)", Ratio: median(peers),
		Target: "≤ 1.00", TargetOp: "<=", TargetVal: 1.0, Samples: map[string][]float64{},
	}
	for k, v := range walls {
		w.Samples[k+" wall s"] = v
		w.Samples[k+" upstream/image"] = ratios[k]
	}
	if d := ratios["distribution proxy"]; len(d) > 0 {
		w.Proxy, w.ProxyRatio = ptr(median(d)), ptr(median(d))
		w.ProxyNote = fmt.Sprintf("wall %.1f s", median(walls["distribution proxy"]))
	}
	rep.add(w)
	return nil
}
