// Package security tries berth as an attacker would, against real
// processes: the berth binary in front of a real distribution registry
// behind a proxy that misbehaves on purpose (hostile_test.go), and a
// memberlist member that holds the cluster secret and lies (rogue_test.go).
// Each case asserts what the client got (status and errcode), that the
// store holds nothing wrong, and that berth's goroutines, file descriptors
// and temp files return to their baseline.
package security

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/proctest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// berthBin is the berth binary built once by TestMain; empty when the
// build failed (buildErr says why).
var (
	berthBin string
	buildErr error
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if bin := os.Getenv("BERTH_E2E_BIN"); bin != "" {
		berthBin = bin
		return leaktest.Check(m.Run(), upstreamtest.IgnoreLeaks())
	}
	dir, err := os.MkdirTemp("", "berth-security-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "security:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	berthBin, buildErr = proctest.BuildBerth(context.Background(), dir, true)
	return leaktest.Check(m.Run(), upstreamtest.IgnoreLeaks())
}

// needBerth returns the built binary, or fails t (the build is part of the
// test: nothing here needs a tool that may be missing).
func needBerth(t testing.TB) string {
	t.Helper()
	if berthBin == "" {
		t.Fatalf("berth binary: %v", buildErr)
	}
	return berthBin
}
