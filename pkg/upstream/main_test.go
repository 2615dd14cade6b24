package upstream

import (
	"os"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.ErrorLevel) // distribution's in-process registry logs through logrus
	os.Exit(m.Run())
}
