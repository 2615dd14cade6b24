package upstream

import (
	"testing"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/sirupsen/logrus"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.ErrorLevel) // distribution's in-process registry logs through logrus
	leaktest.Main(m, upstreamtest.IgnoreLeaks())
}
