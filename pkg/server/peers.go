package server

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/berth-registry/berth/peer"
	"github.com/berth-registry/berth/pkg/mirror"
	"github.com/berth-registry/berth/pkg/registry"
)

// startPeers joins the cluster when peers are configured (a gossip bind
// address); else the node is alone.
func (s *Server) startPeers() (mirror.Peers, registry.PeerAuth, error) {
	pc := s.cfg.Peers
	if pc.Bind == "" {
		return mirror.NoPeers{}, nil, nil
	}
	var secret []byte
	if pc.SecretFile != "" {
		b, err := os.ReadFile(pc.SecretFile)
		if err != nil {
			return nil, nil, fmt.Errorf("peer secret: %w", err)
		}
		secret = b
	}
	rejoin := pc.RejoinInterval.D()
	if rejoin == 0 {
		rejoin = -1 // the config's 0 disables re-joining
	}
	c, err := peer.Start(context.Background(), peer.Config{
		NodeName: pc.NodeName, Bind: pc.Bind, Advertise: pc.Advertise, Join: pc.Join, Secret: secret,
		Timeout: pc.Timeout.D(), IdleTimeout: pc.IdleTimeout.D(), AskNext: pc.AskNext, RejoinInterval: rejoin,
		Logger: s.log, Metrics: s.metrics,
	})
	if err != nil {
		return nil, nil, err
	}
	s.cluster = c
	s.closers = append(s.closers, func() error { return c.Close(5 * time.Second) })
	return c, c, nil
}
