package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// podman runs Debian's podman 4.3 as root with everything of its own in
// temp dirs (--root, --runroot, --tmpdir: its events file and locks, vfs,
// cgroupfs, file events) and the
// registries.conf `berth client-config registries-conf` wrote, given by
// CONTAINERS_REGISTRIES_CONF. It runs under `unshare -m` with tmpfs on
// /var/lib/containers/cache (its blob-info cache, which would let it skip
// blobs another test saw) and on /etc/containers/registries.conf.d (drop-ins
// it would read besides our file).
type podman struct {
	bin, unshare string
	dir          string
	env          []string
}

func newPodman(t testing.TB, registriesConf []byte) *podman {
	t.Helper()
	needRoot(t)
	p := &podman{bin: tool(t, "podman"), unshare: tool(t, "unshare"), dir: t.TempDir()}
	conf, auth, tmp := filepath.Join(p.dir, "registries.conf"), filepath.Join(p.dir, "auth.json"), filepath.Join(p.dir, "tmp")
	for f, body := range map[string][]byte{conf: registriesConf, auth: []byte("{}")} {
		if err := os.WriteFile(f, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"/var/lib/containers/cache", "/etc/containers/registries.conf.d", tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	p.env = []string{"CONTAINERS_REGISTRIES_CONF=" + conf, "REGISTRY_AUTH_FILE=" + auth, "TMPDIR=" + tmp,
		"HOME=" + p.dir, "XDG_RUNTIME_DIR=" + p.dir, "XDG_CONFIG_HOME=" + p.dir}
	if out, err := p.try(t, "version"); err != nil {
		missing(t, "podman cannot run here: %v\n%s", err, out)
	}
	return p
}

// try runs podman with args and returns its output and failure.
func (p *podman) try(t testing.TB, args ...string) (string, error) {
	t.Helper()
	script := `mount -t tmpfs tmpfs /var/lib/containers/cache &&
		mount -t tmpfs tmpfs /etc/containers/registries.conf.d && exec "$@"`
	full := append([]string{"-m", "sh", "-c", script, "sh", p.bin,
		"--root", filepath.Join(p.dir, "root"), "--runroot", filepath.Join(p.dir, "run"), "--tmpdir", filepath.Join(p.dir, "libpod"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"}, args...)
	return run(t, 3*time.Minute, p.env, p.unshare, full...)
}

func (p *podman) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.try(t, args...)
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TestPodman: podman pulls through berth by the registries.conf that
// `berth client-config registries-conf` writes, from a registry named by
// its loopback address with a port (the mirror location carries it as
// HOST_PORT: a ':' there is "invalid reference format") and from docker.io.
// Each registry's own location is a dead loopback port, so a pull that
// bypassed berth fails; each upstream, behind a counting proxy only berth
// talks to, serves each blob exactly once.
func TestPodman(t *testing.T) {
	t.Parallel()
	needBerth(t)
	loopReg, hubReg := startRegistry(t, "", 200), startRegistry(t, "", 200)
	loop, hub := newCountingProxy(t, loopReg), newCountingProxy(t, hubReg)
	app := pushImage(t, loopReg, "e2e/app", "v1", false)
	multi := pushIndex(t, loopReg, "e2e/multi", "v1")
	dock := pushImage(t, hubReg, "library/dockerimg", "v1", true)
	// No default registry that could answer a path berth failed to route:
	// docker.io is the default, and it has no e2e/app.
	b := startBerth(t, berthOpts{
		Registries: map[string]string{loop.Addr: "http://" + loop.Addr, "docker.io": "http://" + hub.Addr},
		Default:    "docker.io",
	})
	conf := mustRun(t, time.Minute, nil, needBerth(t), "client-config", "registries-conf", "--mirror", "http://"+b.Addr,
		"--registry", loop.Addr+"=http://"+deadAddr(t), "--registry", "docker.io=http://"+deadAddr(t))
	if !strings.Contains(conf, b.Addr+"/"+strings.ReplaceAll(loop.Addr, ":", "_")) {
		t.Fatalf("registries.conf has no HOST_PORT mirror location:\n%s", conf)
	}
	p := newPodman(t, []byte(conf))
	for _, c := range []struct {
		ref  string
		want testImage
	}{
		{loop.Addr + "/e2e/app:v1", app},
		{loop.Addr + "/e2e/multi:v1", multi},
		{"docker.io/library/dockerimg:v1", dock},
	} {
		p.run(t, "pull", c.ref)
		digests := p.run(t, "image", "inspect", "--format", "{{.Digest}} {{range .RepoDigests}}{{.}} {{end}}", c.ref)
		if !strings.Contains(digests, c.want.Digest) {
			t.Errorf("podman image inspect %s: %q, want %s", c.ref, digests, c.want.Digest)
		}
	}
	assertBlobsOnce(t, append(append([]string{}, app.Blobs...), multi.Blobs...), loop)
	assertBlobsOnce(t, dock.Blobs, hub)
}
