package cache

import (
	"testing"

	"github.com/berth-registry/berth/pkg/config"
)

// The settings the config file also has take their defaults from its
// embedded default, the one source.
func TestZeroOptionsTakeTheConfigDefaults(t *testing.T) {
	var o Options
	o.defaults()
	def := config.Defaults()
	if o.FillTimeout != def.FillTimeout.D() || o.HighWatermark != def.Cache.HighWatermark || o.LowWatermark != def.Cache.LowWatermark {
		t.Fatalf("zero Options: fill timeout %s, watermarks %v/%v; config default %s, %v/%v",
			o.FillTimeout, o.HighWatermark, o.LowWatermark, def.FillTimeout.D(), def.Cache.HighWatermark, def.Cache.LowWatermark)
	}
}
