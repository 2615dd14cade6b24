package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/hoststoml"
)

func TestParseRegistryFlags(t *testing.T) {
	t.Parallel()
	got, err := parseRegistryFlags([]string{"docker.io", "quay.io=https://quay.example:8443", "_default", "ghcr.io"})
	if err != nil {
		t.Fatal(err)
	}
	want := []hoststoml.Host{
		{Name: "docker.io", Server: "https://registry-1.docker.io"},
		{Name: "quay.io", Server: "https://quay.example:8443"},
		{Name: "_default"},
		{Name: "ghcr.io", Server: "https://ghcr.io"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range [][]string{nil, {"=https://x"}, {"quay.io="}} {
		if _, err := parseRegistryFlags(bad); err == nil {
			t.Errorf("parseRegistryFlags(%q) accepted", bad)
		}
	}
}

func TestHostsTomlCmd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	foreign := filepath.Join(dir, "quay.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte("server = \"https://quay.io\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := hostsTomlCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--dir", dir, "--mirror", "http://127.0.0.1:5000", "--dial-timeout", "2s",
		"--registry", "docker.io", "--registry", "quay.io"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "docker.io", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{hoststoml.Marker, `server = "https://registry-1.docker.io"`, `[host."http://127.0.0.1:5000"]`, `dial_timeout = "2s"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("hosts.toml lacks %q:\n%s", want, b)
		}
	}
	if !strings.Contains(out.String(), "written") || !strings.Contains(out.String(), "skipped") {
		t.Errorf("output does not report written and skipped:\n%s", out.String())
	}
}

func TestPrepareDirCmd(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "cache", "berth")
	cmd := prepareDirCmd()
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"--uid", itoa(os.Getuid()), "--gid", itoa(os.Getgid()), "--mode", "0700", dir})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: mode %v, want a 0700 directory", dir, fi.Mode())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// serve --registry and hosts-toml --registry read the same forms and agree
// on the name and the registry's own URL; both refuse the same bad ones.
func TestRegistryFlagFormsAgree(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"docker.io", "quay.io", "127.0.0.1:5001", "ghcr.io=https://ghcr.example",
		"registry.k8s.io=https://a.test,https://b.test:8443", "[::1]:5000=http://[::1]:5000"} {
		r, err := config.ParseRegistryFlag(v)
		if err != nil {
			t.Errorf("serve --registry %s: %v", v, err)
			continue
		}
		hosts, err := parseRegistryFlags([]string{v})
		if err != nil {
			t.Errorf("hosts-toml --registry %s: %v", v, err)
			continue
		}
		if want := (hoststoml.Host{Name: r.Name, Server: r.Endpoints[0]}); hosts[0] != want {
			t.Errorf("--registry %s: hosts-toml %+v, serve %+v", v, hosts[0], r)
		}
	}
	for _, bad := range []string{"=https://x", "quay.io=", "Quay.IO", "quay.io=ftp://x", "docker.io/library"} {
		_, serveErr := config.ParseRegistryFlag(bad)
		_, hostsErr := parseRegistryFlags([]string{bad})
		if serveErr == nil || hostsErr == nil {
			t.Errorf("--registry %q: serve error %v, hosts-toml error %v; want both to refuse", bad, serveErr, hostsErr)
		}
	}
}

// The chart writes --mirror=http://[$(NODE_IP)]:PORT: an IPv6 node address
// keeps its brackets, an IPv4 one loses them.
func TestMirrorNodeAddress(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://[10.0.0.5]:5000":    "http://10.0.0.5:5000",
		"http://[fd00::5]:5000":     "http://[fd00::5]:5000",
		"http://[::ffff:1.2.3.4]:1": "http://[::ffff:1.2.3.4]:1",
		"http://10.0.0.5:5000":      "http://10.0.0.5:5000",
		"https://berth.local:5443":  "https://berth.local:5443",
	} {
		if got := hoststoml.UnbracketIPv4(in); got != want {
			t.Errorf("UnbracketIPv4(%q) = %q, want %q", in, got, want)
		}
		if _, err := hoststoml.Render(hoststoml.Host{Name: "docker.io"}, hoststoml.Options{Mirror: hoststoml.UnbracketIPv4(in)}); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
}

// --prepend with --authorization-file: the operator's file gets berth
// first with the header, the secret is in no output, the file is 0600;
// without --prepend the skip is warned about; --remove restores the file.
func TestHostsTomlPrependAuthorization(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	own := "server = \"https://quay.io\"\n\n[host.\"https://mirror.corp\"]\n  capabilities = [\"pull\"]\n"
	foreign := filepath.Join(dir, "quay.io", "hosts.toml")
	if err := os.MkdirAll(filepath.Dir(foreign), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(foreign, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	const secret = "Bearer berth-cli-test-token"
	authFile := filepath.Join(t.TempDir(), "auth")
	if err := os.WriteFile(authFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"hosts-toml", "--dir", dir, "--mirror", "http://127.0.0.1:5000", "--registry", "quay.io", "--authorization-file", authFile}
	stdout, stderr, err := run(t, args...)
	if err != nil || !strings.Contains(stderr, "WARNING") || !strings.Contains(stdout, "skipped") {
		t.Fatalf("without --prepend: %v\n%s\n%s", err, stdout, stderr)
	}
	stdout, stderr, err = run(t, append(args, "--prepend")...)
	if err != nil || !strings.Contains(stdout, "prepended") {
		t.Fatalf("--prepend: %v\n%s\n%s", err, stdout, stderr)
	}
	if strings.Contains(stdout+stderr, "berth-cli-test-token") {
		t.Errorf("the secret is in the output:\n%s\n%s", stdout, stderr)
	}
	f, err := hoststoml.Parse(mustRead(t, foreign))
	if err != nil || len(f.Hosts) != 2 || f.Hosts[0] != "http://127.0.0.1:5000" || !strings.Contains(string(mustRead(t, foreign)), secret) {
		t.Errorf("prepended file: %+v %v\n%s", f, err, mustRead(t, foreign))
	}
	if fi, _ := os.Stat(foreign); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 with a secret", fi.Mode().Perm())
	}
	if stdout, stderr, err := run(t, "hosts-toml", "--dir", dir, "--remove"); err != nil || !strings.Contains(stdout, "removed") {
		t.Fatalf("--remove: %v\n%s\n%s", err, stdout, stderr)
	}
	if got := string(mustRead(t, foreign)); got != own {
		t.Errorf("after --remove:\n%s", got)
	}
	if _, _, err := run(t, "hosts-toml", "--dir", dir, "--mirror", "http://127.0.0.1:5000", "--registry", "quay.io", "--authorization-env", "BERTH_TEST_AUTH_NEVER_SET_7f3a"); err == nil {
		t.Error("an empty --authorization-env accepted")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
