package peer

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/proctest"
)

// TestMain fails the run if goroutines outlive the tests (memberlist's
// last probe of a shut-down node ends on its own timer: leaktest waits).
func TestMain(m *testing.M) { leaktest.Main(m) }

// testLogger discards unless BERTH_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("BERTH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fastGossip detects a dead node within about two seconds on loopback,
// with margins for a loaded machine.
func fastGossip() Gossip {
	return Gossip{
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     150 * time.Millisecond,
		SuspicionMult:    3,
		GossipInterval:   50 * time.Millisecond,
		PushPullInterval: 2 * time.Second,
		TCPTimeout:       time.Second,
	}
}

// steadyGossip never marks a live node failed while a test runs, even on
// a loaded 2-core race run where fastGossip's 150ms probes go unanswered
// and memberlist drops a live peer for a moment (the peer leaves the
// relay plan, and rejoins with its suspicion cleared). For tests about
// fetching, not about failure detection: a node whose HTTP side is gone
// stays listed, as these tests want.
func steadyGossip() Gossip {
	g := fastGossip()
	g.ProbeInterval, g.ProbeTimeout, g.SuspicionMult = time.Second, 500*time.Millisecond, 10 // suspect 10s before failed
	return g
}

func testConfig(name, httpAddr string, secret string, join ...string) Config {
	return Config{
		NodeName:       name,
		Bind:           "127.0.0.1:0",
		Advertise:      httpAddr,
		Join:           join,
		Secret:         []byte(secret),
		RejoinInterval: 500 * time.Millisecond,
		Logger:         testLogger(),
		Gossip:         fastGossip(),
	}
}

func start(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { _ = c.Close(time.Second) })
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline, not synchronisation
	}
}

// freePort returns a loopback host:port free a moment ago.
var freePort = proctest.FreeAddr
