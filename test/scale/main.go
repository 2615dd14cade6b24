// Command scale is a flow-level simulator of a berth cluster pulling one
// cold blob at once. It drives berth's own planning code (peer.NewPlan for
// the tree plan, peer.Rank for the owner-star plan of before), and models
// each node's uplink and downlink, the upstream's uplink, a latency per
// hop, and max-min fair sharing of every link among the copies crossing
// it; a node relays a stripe while it downloads it, never faster than it
// receives it. With -fail, that fraction of the nodes dies halfway through
// one node's direct download time; the nodes they fed notice after
// -timeout and ask the next source in the plan.
//
//	go run ./test/scale -nodes 10,100,1000,10000 -blob 1GiB -link 10Gbit/s -fail 0,0.01 -plan star,tree
//
// It prints a table, then one JSON object per line per run.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-registry/berth/peer"
)

// listFlag is a flag that may be repeated or given a comma list.
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }
func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			l.vals = append(l.vals, s)
		}
	}
	return nil
}

func main() {
	nodes := &listFlag{vals: []string{"10", "100", "1000", "10000"}}
	fails := &listFlag{vals: []string{"0", "0.01"}}
	plans := &listFlag{vals: []string{"star", "tree"}}
	flag.Var(nodes, "nodes", "cluster sizes (repeatable or a comma list)")
	flag.Var(fails, "fail", "fractions of nodes that die mid-transfer (repeatable or a comma list)")
	flag.Var(plans, "plan", "tree (berth's plan) or star (the owner serves everyone, as before); repeatable or a comma list")
	blob := flag.String("blob", "1GiB", "blob size (B, KB, MB, GB, KiB, MiB, GiB)")
	link := flag.String("link", "10Gbit/s", "each node's up and down link, and the upstream's (bit/s, Mbit/s, Gbit/s, MB/s, MiB/s, GB/s, GiB/s)")
	fanout := flag.Int("fanout", peer.DefaultFanout, "children per node in a stripe's tree (peers.fanout)")
	stripeMin := flag.String("stripe-min", "32MiB", "smallest stripe (peers.stripeMin)")
	latency := flag.Duration("latency", 200*time.Microsecond, "one-way latency of every hop")
	timeout := flag.Duration("timeout", 500*time.Millisecond, "time for a node to notice its source died")
	seed := flag.Uint64("seed", 1, "seed of the digest and of the nodes that fail")
	flag.Parse()

	size, err := parseSize(*blob)
	check(err)
	rate, err := parseRate(*link)
	check(err)
	smin, err := parseSize(*stripeMin)
	check(err)
	var scs []scenario
	for _, p := range plans.vals {
		for _, f := range fails.vals {
			fr, err := strconv.ParseFloat(f, 64)
			if err != nil || fr < 0 || fr >= 1 {
				check(fmt.Errorf("-fail %q: want a fraction in [0, 1)", f))
			}
			for _, n := range nodes.vals {
				nn, err := strconv.Atoi(n)
				if err != nil || nn < 1 || nn > 1_000_000 {
					check(fmt.Errorf("-nodes %q: want 1 to 1000000", n))
				}
				scs = append(scs, scenario{Nodes: nn, Blob: size, Link: rate, Fail: fr, Plan: p, Fanout: *fanout,
					StripeMin: smin, Latency: *latency, Timeout: *timeout, Seed: *seed})
			}
		}
	}
	var results []result
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(os.Stdout, "%s blob, %s links, fan-out %d, latency %s, failure noticed after %s; times ÷ one node's direct download (%.2fs)\n",
		*blob, *link, *fanout, *latency, *timeout, float64(size)/rate)
	fmt.Fprintln(tw, "plan\tnodes\tfailed\tstripes\tdepth\tupstream\tp50\tp99\tmax\tmax upload\tmax copies\tincomplete\tsim wall\t")
	for _, sc := range scs {
		r, err := simulate(sc)
		check(err)
		results = append(results, r)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.3fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%d\t%d\t%.1fs\t\n", r.Plan, r.Nodes, r.Failed,
			r.Stripes, r.Depth, r.UpstreamRatio, r.P50Ratio, r.P99Ratio, r.MaxRatio, r.MaxUploadRatio, r.MaxCopies, r.Incomplete, r.WallSeconds)
	}
	tw.Flush()
	enc := json.NewEncoder(os.Stdout)
	for _, r := range results {
		check(enc.Encode(r))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(2)
	}
}

// parseSize reads "1GiB", "512MiB", "100MB", "4096".
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	v, err := parseUnit(s, units)
	if err != nil || v < 1 {
		return 0, fmt.Errorf("size %q: want a positive number of B, KB, MB, GB, KiB, MiB or GiB", s)
	}
	return int64(v), nil
}

// parseRate reads "10Gbit/s", "100Mbps", "1.25GB/s", "500MiB/s" as bytes/s.
func parseRate(s string) (float64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"Gbit/s", 1e9 / 8}, {"Mbit/s", 1e6 / 8}, {"Kbit/s", 1e3 / 8}, {"bit/s", 1.0 / 8},
		{"Gbps", 1e9 / 8}, {"Mbps", 1e6 / 8},
		{"GiB/s", 1 << 30}, {"MiB/s", 1 << 20}, {"KiB/s", 1 << 10}, {"GB/s", 1e9}, {"MB/s", 1e6}, {"KB/s", 1e3}, {"B/s", 1},
	}
	v, err := parseUnit(s, units)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("rate %q: want a positive number of bit/s, Mbit/s, Gbit/s, MB/s, MiB/s, GB/s or GiB/s", s)
	}
	return v, nil
}

func parseUnit(s string, units []struct {
	suffix string
	mult   float64
}) (float64, error) {
	s = strings.TrimSpace(s)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseFloat(s, 64)
}
