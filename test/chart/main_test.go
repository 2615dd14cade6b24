package chart

import (
	"testing"

	"github.com/berth-registry/berth/test/proctest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// buildBerth builds the berth command for t.
func buildBerth(t *testing.T) string {
	t.Helper()
	bin, err := proctest.BuildBerth(t.Context(), t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
