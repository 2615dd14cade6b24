package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// skopeo runs skopeo 1.9 through a registries.conf that sends the given
// registry prefixes to mirrors (prefix -> mirror location), each with a
// dead loopback port as its own location. It runs under `unshare -m`, with
// that file bound over /etc/containers/registries.conf and a tmpfs on
// /var/lib/containers/cache, so its blob-info cache (which would let it
// skip blobs it saw before) is its own.
type skopeo struct {
	bin, unshare string
	env          []string
}

func newSkopeo(t testing.TB, mirrors map[string]string) *skopeo {
	t.Helper()
	needRoot(t)
	s := &skopeo{bin: tool(t, "skopeo"), unshare: tool(t, "unshare")}
	dir := t.TempDir()
	var conf strings.Builder
	conf.WriteString("unqualified-search-registries = []\n")
	for prefix, m := range mirrors {
		fmt.Fprintf(&conf, "\n[[registry]]\nprefix = %q\nlocation = %q\ninsecure = true\n", prefix, deadAddr(t))
		fmt.Fprintf(&conf, "[[registry.mirror]]\nlocation = %q\ninsecure = true\n", m)
	}
	file := filepath.Join(dir, "registries.conf")
	auth := filepath.Join(dir, "auth.json")
	for f, body := range map[string]string{file: conf.String(), auth: "{}"} {
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"/var/lib/containers/cache", "/etc/containers/registries.conf.d"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat("/etc/containers/registries.conf"); err != nil {
		missing(t, "skopeo: %v (the apt package installs it)", err)
	}
	s.env = []string{"E2E_REGISTRIES_CONF=" + file, "REGISTRY_AUTH_FILE=" + auth,
		"HOME=" + dir, "XDG_RUNTIME_DIR=" + dir, "XDG_CONFIG_HOME=" + dir}
	return s
}

// copy runs `skopeo copy` with args (plus --insecure-policy).
func (s *skopeo) copy(t testing.TB, args ...string) {
	t.Helper()
	s.run(t, append([]string{"copy", "--retry-times", "0"}, args...)...)
}

// run runs skopeo with args in its own mount namespace and returns its
// output (stdout and stderr, with --debug lines).
func (s *skopeo) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.try(t, args...)
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// try is run that returns skopeo's failure instead of failing t.
func (s *skopeo) try(t testing.TB, args ...string) (string, error) {
	t.Helper()
	// skopeo 1.9 reads only /etc/containers/registries.conf(.d): mount ours there.
	script := `mount -t tmpfs tmpfs /var/lib/containers/cache &&
		mount --bind "$E2E_REGISTRIES_CONF" /etc/containers/registries.conf &&
		mount -t tmpfs tmpfs /etc/containers/registries.conf.d && exec "$@"`
	full := append([]string{"-m", "sh", "-c", script, "sh", s.bin, "--insecure-policy"}, args...)
	return run(t, 3*time.Minute, s.env, s.unshare, full...)
}

// checkDir checks what `skopeo copy ... dir:DIR` wrote: manifest.json
// is want's manifest byte for byte and every blob in blobs is there.
func checkSkopeoDir(t testing.TB, dir string, want testImage, blobs []string) {
	t.Helper()
	if got := fileDigest(t, filepath.Join(dir, "manifest.json")); got != want.Digest {
		t.Errorf("%s: manifest.json is %s, want %s", dir, got, want.Digest)
	}
	checkBlobFiles(t, dir, blobs)
}
