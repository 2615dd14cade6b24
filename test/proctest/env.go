package proctest

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// ChildEnv is this process's environment less BERTH_* variables (a child
// berth would read them as settings) and proxy variables (a test's traffic
// stays on loopback or in its own namespaces), followed by extra.
func ChildEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "BERTH_") || strings.HasSuffix(strings.ToLower(k), "_proxy") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// PickAddr returns a loopback host:port that was free for TCP and UDP a
// moment ago (a process that names its own address, or a peer's, needs it
// before it starts; memberlist binds both). It picks below the kernel's
// ephemeral range, where no outgoing connection is given a port, so only
// another test's pick can take it in between, not the machine's traffic.
func PickAddr() (string, error) {
	lo := ephemeralLow()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(pickFloor+rand.IntN(lo-pickFloor)))
		if free(addr) {
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free loopback port in %d-%d after 100 tries", pickFloor, lo-1)
}

// pickFloor is the lowest port PickAddr picks: above the well-known and
// most fixed service ports.
const pickFloor = 10000

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// where it cannot be read, or where it leaves too little room below).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo < pickFloor+1000 {
		return 32768
	}
	return lo
}

// free says whether addr can be bound for TCP and for UDP now.
func free(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer l.Close()
	p, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	return p.Close() == nil
}

// FreeAddr is PickAddr that fails t on error.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := PickAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// BuildBerth builds the berth command into dir and returns the binary's
// path; race builds it with the race detector, so that a data race in a
// child fails the test that caused it.
func BuildBerth(ctx context.Context, dir string, race bool) (string, error) {
	out := filepath.Join(dir, "berth")
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "github.com/berth-registry/berth/cmd/berth")...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/berth: %w\n%s", err, b)
	}
	return out, nil
}

// ErrCode returns the first OCI errcode in an error body (berth's or a
// registry's), or "" when the body has none.
func ErrCode(body []byte) string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}
