package peers

import (
	"testing"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

func TestMain(m *testing.M) { leaktest.Main(m, upstreamtest.IgnoreLeaks()) }
