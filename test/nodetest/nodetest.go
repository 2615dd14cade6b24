// Package nodetest runs berth nodes in process, in front of a real
// upstream registry from upstreamtest, for tests of whole nodes: one node
// served as the berth command serves it (Start), or a gossip cluster of
// them (StartCluster, StartMember).
package nodetest

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// Node is one berth node serving on a loopback port.
type Node struct {
	*server.Server
	Name     string // a cluster member's name (StartMember)
	Addr     string // 127.0.0.1:port
	URL      string // http://Addr
	AdminURL string // the admin listener: /metrics, /debug/*

	hs *http.Server // a member's HTTP server (Kill)
}

// Start runs a node on the embedded default config with up as its only
// (and default) registry and a store in a temp dir; mutate may change the
// config before it is validated. The node is served by Server.Serve, with
// its graceful shutdown, and stops when the test ends.
func Start(t testing.TB, up *upstreamtest.Registry, mutate ...func(*config.Config)) *Node {
	t.Helper()
	cfg := up.BerthConfig(t)
	// Shutdown counts a connection accepted but never used as busy for 5s
	// (net/http), and a client's pool can leave one: allow more than that.
	cfg.ShutdownGrace = config.Duration(15 * time.Second)
	for _, m := range mutate {
		m(cfg)
	}
	srv := newServer(t, cfg)
	ln, admin := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, server.Listeners{HTTP: ln, Admin: admin}) }()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections() // the tests' client: let shutdown find no idle peer
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		srv.Close()
	})
	n := &Node{Server: srv}
	n.setAddrs(ln, admin)
	return n
}

// newServer validates cfg and makes a server on it.
func newServer(t testing.TB, cfg *config.Config) *server.Server {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := server.New(cfg, Logger())
	if err != nil {
		t.Fatalf("node %s: %v", cfg.Peers.NodeName, err)
	}
	return srv
}

func (n *Node) setAddrs(ln, admin net.Listener) {
	n.Addr = ln.Addr().String()
	n.URL = "http://" + n.Addr
	n.AdminURL = "http://" + admin.Addr().String()
}

// Logger is a node's logger: nil (discard) unless BERTH_TEST_LOG is set,
// then debug to stderr.
func Logger() *slog.Logger {
	if os.Getenv("BERTH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// WaitStored waits (60s at most) until the node has no fill in flight: a
// client gets a blob's last byte once its digest checks, before the store
// has linked and indexed it, so a test that reads the store right after a
// pull (ls, pin, gc on its directory) waits for the commit first.
func (n *Node) WaitStored(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for fills := n.Store().Fills(); len(fills) > 0; fills = n.Store().Fills() {
		if time.Now().After(deadline) {
			t.Fatalf("fills still in flight after 60s: %+v", fills)
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}
