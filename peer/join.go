package peer

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"time"
)

// joinLoop joins the seeds now and then every RejoinInterval (sooner, with
// backoff, until a first join succeeds), so a node finds pods that appear
// behind a headless Service later and heals a split. It ends with ctx.
func (c *Cluster) joinLoop(ctx context.Context) {
	defer close(c.done)
	if len(c.cfg.Join) == 0 {
		return
	}
	every := c.cfg.RejoinInterval
	if every <= 0 {
		every = 30 * time.Second // the backoff's cap until a first join
	}
	backoff := min(time.Second, every)
	for {
		c.joinOnce(ctx)
		wait := every
		switch {
		case !c.joined.Load():
			wait, backoff = backoff, min(2*backoff, every)
		case c.cfg.RejoinInterval <= 0:
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// joinOnce resolves the seeds and joins those that are neither this node
// nor a known member. Seeds that resolve to this node alone count as
// joined: the first pod of a cluster is alone by design.
func (c *Cluster) joinOnce(ctx context.Context) {
	defer c.joinAttempts.Add(1)
	addrs, selfOnly := c.resolveSeeds(ctx)
	if len(addrs) == 0 {
		if selfOnly {
			c.joined.Store(true)
		}
		return
	}
	n, err := c.ml.Join(addrs)
	if n > 0 {
		if !c.joined.Swap(true) {
			c.log.Info("joined the cluster", "contacted", n)
		}
		return
	}
	c.log.Warn("join seeds", "seeds", addrs, "err", err)
}

// resolveSeeds returns the gossip addresses (ip:port) of the seeds to
// join, and whether the seeds resolved to this node only.
func (c *Cluster) resolveSeeds(ctx context.Context) (addrs []string, selfOnly bool) {
	skip := map[string]bool{}
	self := c.ml.LocalNode().Address()
	c.mu.Lock()
	for _, m := range c.members {
		skip[m.gossip] = true
	}
	c.mu.Unlock()
	sawSelf := false
	_, bindPort, _ := net.SplitHostPort(c.GossipAddr())
	for _, seed := range c.cfg.Join {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, bindPort
		}
		if _, err := strconv.Atoi(port); err != nil {
			c.log.Warn("seed has a bad port", "seed", seed)
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, err := net.DefaultResolver.LookupHost(lctx, host)
		cancel()
		if err != nil {
			c.log.Debug("resolve seed", "seed", seed, "err", err)
			continue
		}
		for _, ip := range ips {
			a := net.JoinHostPort(ip, port)
			switch {
			case a == self:
				sawSelf = true
			case !skip[a]:
				skip[a] = true
				addrs = append(addrs, a)
			}
		}
	}
	return addrs, sawSelf && len(addrs) == 0
}

func bytesTrim(b []byte) []byte { return bytes.TrimSpace(b) }
