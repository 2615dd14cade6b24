package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/auth"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/registry"
	"github.com/berth-registry/berth/pkg/upstream"
)

// The cluster and the upstream client are what the mirror and the API
// declare they need; the lower packages cannot name those interfaces, so
// the checks live here, where they are wired.
var (
	_ mirror.Peers         = (*peer.Cluster)(nil)
	_ mirror.Upstream      = (*upstream.Client)(nil)
	_ registry.PeerAuth    = (*peer.Cluster)(nil)
	_ registry.Passthrough = (*upstream.Client)(nil)
	_ registry.Access      = (*auth.Gate)(nil)
)

// startPeers joins the cluster when peers are configured (a gossip bind
// address); else the node is alone: mirror.NoPeers, and no peer markers.
// A cluster stripes large blobs: its peers and upstream fetch byte ranges.
var (
	_ mirror.StripedPeers  = (*peer.Cluster)(nil)
	_ mirror.RangeUpstream = (*upstream.Client)(nil)
)

func (s *Server) startPeers() (mirror.Peers, registry.PeerAuth, error) {
	pc := s.cfg.Peers
	if pc.Bind == "" {
		return mirror.NoPeers{}, nil, nil
	}
	secret, err := config.ReadSecret(pc.SecretFile)
	if err != nil {
		return nil, nil, err
	}
	name := pc.NodeName
	if name == "" {
		var err error
		if name, err = defaultNodeName(s.store.Root()); err != nil {
			return nil, nil, err
		}
	}
	stripeMin, err := config.StripeMin(pc.StripeSize)
	if err != nil {
		return nil, nil, err
	}
	c, err := peer.Start(context.Background(), peer.Config{
		NodeName: name, Bind: pc.Bind, Advertise: pc.Advertise, Join: pc.Join, Secret: secret,
		Timeout: pc.Timeout.D(), IdleTimeout: pc.IdleTimeout.D(), AskNext: pc.AskNext, Fanout: pc.Fanout, StripeMin: stripeMin, RejoinInterval: pc.RejoinInterval.D(),
		LocalTags: !pc.ResolveTags, AllowForeignAdvertise: pc.AllowForeignAdvertise,
		Logger: s.log, Metrics: s.metrics,
	})
	if err != nil {
		return nil, nil, err
	}
	s.cluster = c
	s.closers = append(s.closers, func() error { return c.Close(5 * time.Second) })
	return c, c, nil
}

// nodeIDFile holds a node's random id in its cache directory.
const nodeIDFile = "node-id"

// defaultNodeName is the node name when peers.nodeName is unset: the host
// name and a random id kept in the cache directory, so several berth nodes
// on one host (each with its own cache) get names of their own, and a node
// keeps its name across restarts.
func defaultNodeName(cacheDir string) (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("node name: %w", err)
	}
	path := filepath.Join(cacheDir, nodeIDFile)
	id, err := os.ReadFile(path)
	if err != nil || !nodeIDRE.Match(id) {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("node id: %w", err)
		}
		id = []byte(hex.EncodeToString(b[:]))
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, id, 0o644); err != nil {
			return "", fmt.Errorf("node id: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return "", fmt.Errorf("node id: %w", err)
		}
	}
	return host + "-" + string(id), nil
}

var nodeIDRE = regexp.MustCompile(`^[0-9a-f]{8}$`)

// NodeName returns this node's name in its cluster, or "" when it runs alone.
func (s *Server) NodeName() string {
	if s.cluster == nil {
		return ""
	}
	return s.cluster.Name()
}
