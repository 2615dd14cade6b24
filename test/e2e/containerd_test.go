package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
)

// containerd is a containerd daemon of the test's own: root, state and
// sockets in a temp dir, the CRI plugin off.
type containerd struct {
	dir, sock, hosts string
	ctrBin           string
}

// startContainerd starts containerd 1.6 (apt's) and waits for its socket.
func startContainerd(t testing.TB) *containerd {
	t.Helper()
	needRoot(t)
	return startContainerdBin(t, tool(t, "containerd"), tool(t, "ctr"), containerd16Config)
}

// The containerd configs (test/proctest): 1.6's for a pull through
// hosts.toml, and the builder the CRI tests' variants start from.
var containerd16Config, containerdConfig = proctest.Containerd16Config, proctest.ContainerdConfig

// startContainerdBin starts the given containerd with config (in which
// {{dir}} names its temp dir) and waits for its socket.
func startContainerdBin(t testing.TB, bin, ctr, config string) *containerd {
	t.Helper()
	// A short path: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	c := &containerd{dir: dir, sock: filepath.Join(dir, "c.sock"), hosts: filepath.Join(dir, "hosts"), ctrBin: ctr}
	cfg := strings.ReplaceAll(config, "{{dir}}", dir)
	file := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "containerd", nil, bin, "--config", file, "--log-level", "info")
	p.waitSocket(t, c.sock)
	return c
}

// mirror writes DIR/<host>/hosts.toml naming mirror (host:port, plain
// HTTP) for pulls and resolves, with server = a dead loopback port so a
// fallback fails loudly. The file is written by `berth hosts-toml`, the
// command the Helm chart's init container runs on every node, so each
// containerd test also proves containerd accepts what berth writes.
func (c *containerd) mirror(t testing.TB, host, mirror string) {
	t.Helper()
	c.mirrorWithServer(t, host, mirror, deadAddr(t))
}

// mirrorWithServer is mirror with the fallback server given (host:port).
func (c *containerd) mirrorWithServer(t testing.TB, host, mirror, server string) {
	t.Helper()
	out := mustRun(t, time.Minute, nil, needBerth(t), "hosts-toml", "--dir", c.hosts,
		"--mirror", "http://"+mirror, "--registry", host+"=http://"+server)
	b, err := os.ReadFile(filepath.Join(c.hosts, host, "hosts.toml"))
	if err != nil || !strings.Contains(string(b), "# managed by berth") || !strings.Contains(string(b), mirror) {
		t.Fatalf("berth hosts-toml wrote no usable file for %s (%v):\n%s\n%s", host, err, out, b)
	}
}

// ctr runs ctr against this containerd.
func (c *containerd) ctr(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, 3*time.Minute, nil, c.ctrBin, append([]string{"--address", c.sock}, args...)...)
}

// pull pulls ref through the hosts dir (unpacking it) and checks the
// result against want: the image's target digest, every blob a
// linux/GOARCH client needs present in the content store, and the
// image complete (ctr images check).
func (c *containerd) pull(t testing.TB, ref string, want testImage) {
	t.Helper()
	c.ctr(t, "images", "pull", "--hosts-dir", c.hosts, ref)
	ls := c.ctr(t, "images", "ls")
	if !hasLine(ls, ref, want.Digest) {
		t.Errorf("ctr images ls: no %s at %s:\n%s", ref, want.Digest, ls)
	}
	check := c.ctr(t, "images", "check")
	if !hasLine(check, ref, "complete") {
		t.Errorf("ctr images check: %s not complete:\n%s", ref, check)
	}
	content := c.ctr(t, "content", "ls", "-q")
	for _, d := range append(append([]string{want.Digest}, want.Blobs...), firstChild(want)...) {
		if !strings.Contains(content, d) {
			t.Errorf("content store lacks %s (of %s):\n%s", d, ref, content)
		}
	}
}

func firstChild(ti testImage) []string {
	if len(ti.Children) == 0 {
		return nil
	}
	return ti.Children[:1]
}

// hasLine reports whether some line of out holds all of words.
func hasLine(out string, words ...string) bool {
	for _, l := range strings.Split(out, "\n") {
		ok := true
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			return true
		}
	}
	return false
}
