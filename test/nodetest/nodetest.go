// Package nodetest runs a berth node in process, in front of a real
// upstream registry from upstreamtest, for tests of whole nodes.
package nodetest

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// Node is one berth node serving on a loopback port.
type Node struct {
	*server.Server
	URL      string // http://127.0.0.1:port
	AdminURL string // the admin listener: /metrics, /debug/*
}

// Start runs a node on the embedded default config with up as its only
// (and default) registry and a store in a temp dir; mutate may change the
// config before it is validated. The node stops when the test ends.
func Start(t testing.TB, up *upstreamtest.Registry, mutate ...func(*config.Config)) *Node {
	t.Helper()
	cfg, err := config.Default()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registries = []config.Registry{{Name: up.Host, Endpoints: []string{up.URL}}}
	cfg.DefaultRegistry = up.Host
	cfg.Cache.Dir = t.TempDir()
	// Shutdown counts a connection accepted but never used as busy for 5s
	// (net/http), and a client's pool can leave one: allow more than that.
	cfg.ShutdownGrace = config.Duration(15 * time.Second)
	for _, m := range mutate {
		m(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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
	return &Node{Server: srv, URL: "http://" + ln.Addr().String(), AdminURL: "http://" + admin.Addr().String()}
}
