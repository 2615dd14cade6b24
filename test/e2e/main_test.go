package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/proctest"
)

// berthBin is the berth binary built once by TestMain; empty when the
// build failed (buildErr says why).
var (
	berthBin string
	buildErr error
	repoRoot string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	dir, err := os.MkdirTemp("", "berth-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if bin := os.Getenv("BERTH_E2E_BIN"); bin != "" {
		berthBin = bin // a berth built elsewhere (a release, a debug build)
	} else {
		berthBin, buildErr = proctest.BuildBerth(context.Background(), dir, true)
	}
	return leaktest.Check(m.Run())
}

// inCI reports whether a missing prerequisite must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// missing skips t, or fails it under CI, for a missing prerequisite.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// needBerth returns the built berth binary, or skips/fails t.
func needBerth(t testing.TB) string {
	t.Helper()
	if berthBin == "" {
		missing(t, "berth binary: %v", buildErr)
	}
	return berthBin
}

// needRoot skips/fails t when not running as root (containerd, unshare).
func needRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		missing(t, "needs root")
	}
}

// tool returns the path of a needed tool: first in $BERTH_TOOLS/bin (or
// <repo>/.tools/bin), then on PATH. It skips/fails t when absent.
func tool(t testing.TB, name string) string {
	t.Helper()
	dirs := []string{filepath.Join(repoRoot, ".tools", "bin")}
	if d := os.Getenv("BERTH_TOOLS"); d != "" {
		dirs = append([]string{filepath.Join(d, "bin")}, dirs...)
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	missing(t, "tool %s not found in %s or PATH (run test/tools.sh)", name, strings.Join(dirs, ", "))
	return ""
}
