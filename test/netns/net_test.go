package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testNet is the test's network: a bridge namespace and host namespaces
// on one /24, their processes and a scratch directory. Its cleanup, the
// first registered and so the last to run, stops every process, deletes
// every namespace (their veths go with them) and the directory, and
// checks that no namespace of this run is left.
type testNet struct {
	prefix string       // namespace names start with it; unique per run (pid)
	subnet netip.Prefix // a /24 the machine does not use
	dir    string       // scratch: logs, stores, layouts
	bridge string       // namespace holding br0

	mu    sync.Mutex // guards nss and procs
	nss   []string
	procs []*proc
}

// host is a namespace with one address on the subnet, on eth0.
type host struct {
	ns string
	ip netip.Addr
}

func newNet(t *testing.T) *testNet {
	t.Helper()
	dir, err := os.MkdirTemp("", "berth-netns-")
	if err != nil {
		t.Fatal(err)
	}
	sweepStale(t)
	n := &testNet{prefix: fmt.Sprintf("%s%d-", nsPrefix, os.Getpid()), subnet: freeSubnet(t), dir: dir}
	t.Cleanup(func() { n.teardown(t) })
	n.bridge = n.addNS(t, "br")
	n.ip(t, "-n", n.bridge, "link", "set", "lo", "up")
	n.ip(t, "-n", n.bridge, "link", "add", "name", "br0", "type", "bridge")
	n.ip(t, "-n", n.bridge, "link", "set", "br0", "up")
	t.Logf("subnet %s, namespaces %s*", n.subnet, n.prefix)
	return n
}

// nsPrefix starts the name of every namespace this test makes, followed by
// the test process's pid and a dash.
const nsPrefix = "berth-nt"

// sweepStale deletes namespaces left by runs of this test whose process is
// gone (one killed by go test's -timeout runs no cleanup).
func sweepStale(t *testing.T) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for l := range strings.SplitSeq(string(out), "\n") {
		ns, _, _ := strings.Cut(l, " ")
		pid, _, ok := strings.Cut(strings.TrimPrefix(ns, nsPrefix), "-")
		if !strings.HasPrefix(ns, nsPrefix) || !ok {
			continue
		}
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); os.IsNotExist(err) {
			t.Logf("deleting namespace %s of an earlier run", ns)
			_ = exec.Command("ip", "netns", "del", ns).Run()
		}
	}
}

// addNS creates namespace prefix+name and registers it for deletion.
func (n *testNet) addNS(t *testing.T, name string) string {
	t.Helper()
	ns := n.prefix + name
	n.ip(t, "netns", "add", ns)
	n.mu.Lock()
	n.nss = append(n.nss, ns)
	n.mu.Unlock()
	return ns
}

// addHost creates a namespace whose eth0 is a veth on the bridge, with
// address .octet of the subnet. The veth is created inside the bridge
// namespace: no link ever exists in the root namespace.
func (n *testNet) addHost(t *testing.T, name string, octet byte) host {
	t.Helper()
	ns := n.addNS(t, name)
	a := n.subnet.Addr().As4()
	a[3] = octet
	h := host{ns: ns, ip: netip.AddrFrom4(a)}
	port := "v-" + name // in the bridge namespace, which is this run's own
	n.ip(t, "-n", n.bridge, "link", "add", "name", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
	n.ip(t, "-n", n.bridge, "link", "set", port, "master", "br0", "up")
	n.ip(t, "-n", ns, "addr", "add", netip.PrefixFrom(h.ip, 24).String(), "dev", "eth0")
	n.ip(t, "-n", ns, "link", "set", "eth0", "up")
	n.ip(t, "-n", ns, "link", "set", "lo", "up")
	return h
}

// ip runs the ip command (from the root namespace; -n enters one).
func (n *testNet) ip(t *testing.T, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// exec runs bin inside h's namespace with a bound and returns its stdout.
func (n *testNet) exec(t *testing.T, h host, timeout time.Duration, env []string, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.ns, bin}, args...)...)
	cmd.Env = childEnv(env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s in %s: %w: %s", filepath.Base(bin), h.ns, err, stderr.String())
	}
	return string(out), nil
}

// helper runs this test binary in role inside h and returns its stdout.
func (n *testNet) helper(t *testing.T, h host, timeout time.Duration, role string, args ...string) (string, error) {
	t.Helper()
	return n.exec(t, h, timeout, helperEnv(role), self(t), args...)
}

// helperEnv is the environment of a helper in role: the race detector's
// one-second sleep at exit (this test binary is built with -race) would
// cost a second per helper run.
func helperEnv(role string) []string {
	return []string{roleEnv + "=" + role, "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")}
}

func self(t *testing.T) string {
	t.Helper()
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// teardown stops the processes (all at once), deletes the namespaces and
// the scratch directory, and fails t if a namespace of this run is left.
func (n *testNet) teardown(t *testing.T) {
	n.mu.Lock()
	procs, nss := n.procs, n.nss
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(10 * time.Second) })
	}
	wg.Wait()
	for _, p := range procs {
		p.report(t)
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", nss[i]).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", nss[i], err, out)
		}
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Errorf("ip netns list: %v", err)
	}
	for l := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(l, n.prefix) {
			t.Errorf("namespace left after cleanup: %s", l)
		}
	}
	_ = os.RemoveAll(n.dir)
}

// freeSubnet returns the first /24 of 198.18.0.0/15 (reserved for
// benchmarking, RFC 2544) that no address or route of the root namespace
// overlaps.
func freeSubnet(t *testing.T) netip.Prefix {
	t.Helper()
	var used []netip.Prefix
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			used = append(used, p.Masked())
		}
	}
	out, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route: %v", err)
	}
	used = append(used, routePrefixes(string(out))...)
	for i := range 512 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i/256), byte(i % 256), 0}), 24)
		free := true
		for _, u := range used {
			free = free && !u.Overlaps(p)
		}
		if free {
			return p
		}
	}
	t.Fatal("every /24 of 198.18.0.0/15 is in use on this machine")
	return netip.Prefix{}
}

// routePrefixes returns the destinations of `ip -4 route show table all`
// lines, less the default route.
func routePrefixes(out string) []netip.Prefix {
	var ps []netip.Prefix
	for l := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && strings.Contains("unicast local broadcast multicast anycast blackhole unreachable prohibit throw nat", f[0]) {
			f = f[1:]
		}
		if len(f) == 0 || f[0] == "default" {
			continue
		}
		dst := f[0]
		if !strings.Contains(dst, "/") {
			dst += "/32"
		}
		if p, err := netip.ParsePrefix(dst); err == nil {
			ps = append(ps, p.Masked())
		}
	}
	return ps
}
