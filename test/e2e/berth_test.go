package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// berth is a running berth serve process.
type berth struct {
	Addr  string // host:port it serves on
	Admin string // host:port of its admin listener (/metrics, /debug/*)
	p     *proc
}

// berthOpts are the serve flags a test varies.
type berthOpts struct {
	Registries map[string]string    // name -> upstream URL(s), comma-separated
	Default    string               // --default-registry
	Creds      map[string][2]string // name -> username, password (config file only)
	Access     map[string]string    // name -> access setting; with Creds and none set, anonymous
	Config     string               // more top-level YAML for the config file (auth:)
	Extra      []string             // more flags
}

// startBerth runs `berth serve` on a free loopback port with its own cache
// dir and waits for GET /readyz to answer 200. It is stopped in t.Cleanup,
// and the test fails if the race detector reported anything in its log.
func startBerth(t testing.TB, o berthOpts) *berth {
	t.Helper()
	bin := needBerth(t)
	var lastErr error
	for range 3 { // the free port may be taken between pick and bind
		addr := freeAddr(t)
		admin := freeAddr(t)
		dir := t.TempDir()
		args := []string{"serve", "--config", berthConfig(t, dir, o), "--addr", addr, "--admin-addr", admin,
			"--cache-dir", filepath.Join(dir, "cache"), "--tag-ttl", "60s"}
		for n, u := range o.Registries {
			_, creds := o.Creds[n]
			if _, access := o.Access[n]; !creds && !access { // the flag would replace the entry whole
				args = append(args, "--registry", n+"="+u)
			}
		}
		if o.Default != "" {
			args = append(args, "--default-registry", o.Default)
		}
		args = append(args, o.Extra...)
		p := startProc(t, "berth", []string{"GORACE=halt_on_error=0"}, bin, args...)
		// /readyz, not /v2/: with client auth, /v2/ asks for credentials.
		if lastErr = p.ready("http://"+addr+"/readyz", 200); lastErr == nil {
			b := &berth{Addr: addr, Admin: admin, p: p}
			t.Cleanup(b.checkRaces(t))
			return b
		}
		p.Stop(5 * time.Second)
	}
	t.Fatalf("berth: %v", lastErr)
	return nil
}

// berthConfig writes a config file that lists only the test's registries,
// so the embedded default's real registries are not even configured: a
// misrouted request fails here instead of leaving the machine. The flags
// repeat the same settings, so both paths are exercised.
func berthConfig(t testing.TB, dir string, o berthOpts) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "defaultRegistry: %q\nregistries:\n", o.Default)
	for n, u := range o.Registries {
		fmt.Fprintf(&b, "  - name: %q\n    endpoints: [%s]\n", n, u)
		if c, ok := o.Creds[n]; ok {
			fmt.Fprintf(&b, "    username: %q\n    password: %q\n", c[0], c[1])
		}
		if a, ok := o.Access[n]; ok {
			if a != "" {
				fmt.Fprintf(&b, "    access: %s\n", a)
			}
		} else if _, ok := o.Creds[n]; ok {
			// The upstream-auth tests are about berth's own credentials;
			// what clients may read is access_test.go's.
			b.WriteString("    access: anonymous\n")
		}
	}
	b.WriteString(o.Config)
	file := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// checkRaces returns a cleanup (run before the process is stopped, as
// cleanups run last-in first-out) that stops berth and fails t on a data
// race report in its log.
func (b *berth) checkRaces(t testing.TB) func() {
	return func() {
		b.p.Stop(10 * time.Second)
		if log := b.p.Tail(1 << 20); strings.Contains(log, "WARNING: DATA RACE") {
			t.Errorf("berth reported a data race:\n%s", log)
		}
	}
}
