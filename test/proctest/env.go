package proctest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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

// PickAddr returns a loopback host:port that was free a moment ago (a
// process that names its own address, or a peer's, needs it before it
// starts). Another process may take it in between.
func PickAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
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
