// Package netns tests a berth cluster across network namespaces the test
// creates and deletes: a bridge in a namespace of its own, one namespace
// per berth node and one for the upstream registry, joined by veth pairs on
// a private benchmark subnet (198.18.0.0/15). Gossip and peer HTTP cross
// real interfaces, and a link can be cut with `ip link set … down`.
//
// Nothing in the root namespace addresses the subnet: the upstream and the
// clients are this test binary re-executed inside the namespaces (see
// roleEnv), and the test reads results from their stdout. It needs root
// and `ip netns`; without them it skips, or fails when CI=true.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/berth-registry/berth/test/leaktest"
	"github.com/berth-registry/berth/test/proctest"
)

// roleEnv names the helper role a re-executed test binary plays inside a
// namespace: upstream, pull, blob, wait, get or post.
const roleEnv = "BERTH_NETNS_TEST_ROLE"

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role, os.Args[1:]); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", role, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	leaktest.Main(m)
}

func runRole(role string, args []string) error {
	switch role {
	case "upstream":
		return runUpstream(args)
	case "pull":
		return runPull(args)
	case "blob":
		return runBlob(args)
	case "wait":
		return runWait(args)
	case "get":
		return runHTTP("GET", args)
	case "post":
		return runHTTP("POST", args)
	}
	return fmt.Errorf("unknown role %q", role)
}

var childEnv = proctest.ChildEnv

// prerequisite skips t, or fails it when CI=true, for a missing
// prerequisite.
func prerequisite(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing under CI: "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// requireNetns checks for root and a working `ip netns` with bridge and
// veth support, by making and deleting a probe namespace.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		prerequisite(t, "network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		prerequisite(t, "no ip command (iproute2): %v", err)
	}
	probe := fmt.Sprintf("%s%d-probe", nsPrefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		prerequisite(t, "ip netns add: %v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", probe).Run()
	out, err := exec.Command("ip", "-n", probe, "link", "add", "name", "br0", "type", "bridge").CombinedOutput()
	if err == nil {
		out, err = exec.Command("ip", "-n", probe, "link", "add", "name", "v0", "type", "veth", "peer", "name", "v1").CombinedOutput()
	}
	if err != nil {
		prerequisite(t, "bridge or veth in a namespace: %v: %s", err, out)
	}
}

// buildBerth builds ./cmd/berth with the race detector into dir.
func buildBerth(t *testing.T, dir string) string {
	t.Helper()
	if bin := os.Getenv("BERTH_NETNS_BIN"); bin != "" {
		return bin // a berth built elsewhere
	}
	bin, err := proctest.BuildBerth(t.Context(), dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
