package peer

import (
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
)

// The settings the config file also has take their defaults from its
// embedded default, the one source.
func TestZeroConfigTakesTheConfigDefaults(t *testing.T) {
	t.Parallel()
	var c Config
	c.setDefaults()
	def := config.Defaults().Peers
	if c.Timeout != def.Timeout.D() || c.IdleTimeout != def.IdleTimeout.D() || c.AskNext != def.AskNext {
		t.Fatalf("zero Config: timeout %s idle %s askNext %d; config default: %s %s %d",
			c.Timeout, c.IdleTimeout, c.AskNext, def.Timeout.D(), def.IdleTimeout.D(), def.AskNext)
	}
	if c.Fanout != def.Fanout || DefaultFanout != def.Fanout {
		t.Fatalf("fanout: zero Config %d, DefaultFanout %d; config default %d", c.Fanout, DefaultFanout, def.Fanout)
	}
	if sm, err := config.StripeMin(def.StripeSize); err != nil || sm != DefaultStripeMin || c.StripeMin != DefaultStripeMin {
		t.Fatalf("stripe size: zero Config %d, DefaultStripeMin %d; config default %q (%d, %v)", c.StripeMin, DefaultStripeMin, def.StripeSize, sm, err)
	}
	if c.RejoinInterval != 0 {
		t.Fatalf("zero RejoinInterval became %s; 0 means off, as in the config", c.RejoinInterval)
	}
}

// rejoinInterval 0 means off in the config and here: the join loop ends
// once a first join succeeds.
func TestRejoinIntervalZeroStopsAfterTheFirstJoin(t *testing.T) {
	t.Parallel()
	a := start(t, testConfig("a", "127.0.0.1:5101", "s3cret"))
	cfg := testConfig("b", "127.0.0.1:5102", "s3cret", a.GossipAddr())
	cfg.RejoinInterval = 0
	b := start(t, cfg)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the join loop still runs after joining (attempts %d, joined %v)", b.joinAttempts.Load(), b.joined.Load())
	}
	if !b.joined.Load() {
		t.Fatal("the join loop ended without joining")
	}
}
