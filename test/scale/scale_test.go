package main

import (
	"fmt"
	"testing"
	"time"
)

func base(nodes int, plan string, fail float64) scenario {
	return scenario{Nodes: nodes, Blob: 1 << 30, Link: 10e9 / 8, Fail: fail, Plan: plan,
		Latency: 200 * time.Microsecond, Timeout: 500 * time.Millisecond, Seed: 1}
}

// TestTreePlanMeetsTargets runs berth's plan through the simulator and
// checks the targets. It tests the plan, not the machine: the
// simulated times do not depend on how fast the test runs.
func TestTreePlanMeetsTargets(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		nodes int
		fail  float64
	}{{10, 0}, {100, 0}, {10, 0.1}, {100, 0.01}, {100, 0.05}} {
		t.Run(fmt.Sprintf("%d nodes %g fail", c.nodes, c.fail), func(t *testing.T) {
			r, err := simulate(base(c.nodes, "tree", c.fail))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%+v", r)
			if r.Incomplete != 0 {
				t.Errorf("%d live nodes never got the blob", r.Incomplete)
			}
			if c.fail > 0 && r.Failed == 0 {
				t.Fatalf("no node failed")
			}
			if r.MaxCopies > 2*4 {
				t.Errorf("a node served %d copies at once, over the limit of 8", r.MaxCopies)
			}
			if c.fail == 0 {
				if r.UpstreamRatio > 1.0001 || r.UpstreamRatio < 0.9999 {
					t.Errorf("upstream served %.4fx the blob, want 1.0x", r.UpstreamRatio)
				}
				if r.P50Ratio > 1.2 || r.P99Ratio > 1.5 {
					t.Errorf("p50 %.2fx, p99 %.2fx one node's direct download; want at most 1.2x and 1.5x", r.P50Ratio, r.P99Ratio)
				}
				if r.MaxUploadRatio > 1.5 {
					t.Errorf("a node uploaded %.2fx the blob, want at most 1.5x", r.MaxUploadRatio)
				}
				if r.MaxCopies > 4+1 {
					t.Errorf("a node served %d copies at once without failures, want at most k+1", r.MaxCopies)
				}
				return
			}
			if r.UpstreamRatio > 1.05 {
				t.Errorf("upstream served %.3fx the blob with failures, want at most 1.05x", r.UpstreamRatio)
			}
			if r.P99Ratio > 3 {
				t.Errorf("p99 %.2fx one node's direct download with failures, want at most 3x", r.P99Ratio)
			}
		})
	}
}

// TestStarPlanMissesTargets is the before, and proves the targets can
// fail: the owner uploads N-1 copies.
func TestStarPlanMissesTargets(t *testing.T) {
	t.Parallel()
	r, err := simulate(base(100, "star", 0))
	if err != nil {
		t.Fatal(err)
	}
	if r.UpstreamRatio > 1.0001 {
		t.Errorf("upstream served %.3fx the blob, want 1x", r.UpstreamRatio)
	}
	if r.P99Ratio < 90 || r.MaxUploadRatio < 98 || r.MaxCopies != 99 {
		t.Errorf("star at 100 nodes: p99 %.1fx, max upload %.1fx, max copies %d; want about 99x, 99x, 99", r.P99Ratio, r.MaxUploadRatio, r.MaxCopies)
	}
}

// TestSimulatorBasics checks the model on cases worked by hand.
func TestSimulatorBasics(t *testing.T) {
	t.Parallel()
	// One node: one direct download (plus a round trip).
	r, err := simulate(base(1, "tree", 0))
	if err != nil {
		t.Fatal(err)
	}
	if r.P50Ratio < 1 || r.P50Ratio > 1.01 || r.UpstreamRatio != 1 {
		t.Errorf("one node: %.3fx its direct time, upstream %.3fx; want 1x, 1x", r.P50Ratio, r.UpstreamRatio)
	}
	// Three nodes, star: the owner streams to two while it downloads, so the
	// others take twice as long (its uplink split in two).
	r, err = simulate(base(3, "star", 0))
	if err != nil {
		t.Fatal(err)
	}
	if r.P99Ratio < 2 || r.P99Ratio > 2.02 {
		t.Errorf("three nodes, star: p99 %.3fx, want 2x", r.P99Ratio)
	}
}

func TestParseUnits(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"1GiB": 1 << 30, "512MiB": 512 << 20, "100MB": 100e6, "4096": 4096, "2 KiB": 2048} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]float64{"10Gbit/s": 1.25e9, "100Mbps": 12.5e6, "1GB/s": 1e9, "1MiB/s": 1 << 20} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %g, %v; want %g", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1GiB", "0", "1XB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q): no error", bad)
		}
	}
}
