package e2e

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The CRI pull matrix: the kubelet pulls through containerd's CRI plugin,
// not through ctr, and containerd 2.x's CRI plugin pulls through its
// transfer service unless use_local_image_pull = true. Each of the three
// runtimes below pulls one image with `crictl pull` through hosts.toml files
// that berth hosts-toml wrote, with the CRI's snapshotter set to native (no
// overlayfs, no cgroups needed for a pull).

// criContainerd16Config is apt's containerd 1.6 with its CRI plugin on.
var criContainerd16Config = containerdConfig(2, nil, `[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{{dir}}/hosts"
`)

// criContainerd2Config is containerd 2.x with its CRI plugins on (NRI,
// which listens on a machine-wide socket, off); {{local}} is
// use_local_image_pull: false pulls through the transfer service (the
// default), true through the CRI's own client pull. The transfer service
// unpacks to the native snapshotter too, and fetches a layer as 1 MiB
// Range requests (the CRI's own pull has no such buffer): how the test
// tells which of the two pulled.
var criContainerd2Config = containerdConfig(3, []string{"io.containerd.nri.v1.nri"}, `[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "native"
  use_local_image_pull = {{local}}
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{{dir}}/hosts"
[plugins."io.containerd.transfer.v1.local"]
  max_concurrent_downloads = 4
  concurrent_layer_fetch_buffer = 1048576
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/{{arch}}"
    snapshotter = "native"
    differ = "walking"
`)

func criContainerd2(local bool) string {
	return strings.NewReplacer("{{local}}", strconv.FormatBool(local), "{{arch}}", runtime.GOARCH).Replace(criContainerd2Config)
}

// fallbackServer is the `server` of the hosts.toml files: a loopback
// listener that counts and drops every connection, so a pull that bypassed
// the mirror fails and is seen.
type fallbackServer struct {
	Addr  string
	conns atomic.Int64
}

func newFallbackServer(t testing.TB) *fallbackServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fallbackServer{Addr: l.Addr().String()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return f
}

// crictl runs crictl against c's CRI socket with a config file of its own
// (crictl reads /etc/crictl.yaml otherwise).
func (c *containerd) crictl(t testing.TB, args ...string) string {
	t.Helper()
	return mustRun(t, 3*time.Minute, nil, tool(t, "crictl"), append([]string{"--config", c.crictlConfig(t)}, args...)...)
}

// crictlConfig writes (once) and returns crictl's config file for c.
func (c *containerd) crictlConfig(t testing.TB) string {
	t.Helper()
	cfg := filepath.Join(c.dir, "crictl.yaml")
	if _, err := os.Stat(cfg); err != nil {
		y := "runtime-endpoint: unix://" + c.sock + "\nimage-endpoint: unix://" + c.sock + "\ntimeout: 120\n"
		if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// TestCRIPullMatrix: `crictl pull` through containerd 1.6's CRI plugin,
// containerd 2.x's with the transfer service, and 2.x's without it. For
// each, every manifest and blob the pull needed crossed berth (a proxy in
// front of berth saw them), the upstream saw each blob once in all and only
// from berth, and the fallback server in hosts.toml got no connection; the
// CRI then knows the image by the config's digest.
func TestCRIPullMatrix(t *testing.T) {
	t.Parallel()
	needBerth(t)
	needRoot(t)
	tool(t, "crictl")
	runtimes := []struct {
		name, bin, ctr, config string
		ranges                 bool // the big layer comes as Range requests (the transfer service)
	}{
		{"containerd 1.6", tool(t, "containerd"), tool(t, "ctr"), criContainerd16Config, false},
		{"containerd 2.x transfer service", containerd2Tool(t, "containerd"), containerd2Tool(t, "ctr"), criContainerd2(false), true},
		{"containerd 2.x local pull", containerd2Tool(t, "containerd"), containerd2Tool(t, "ctr"), criContainerd2(true), false},
	}
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	img := randomImage(t, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, runtime.GOARCH, 3<<20, 256<<10)
	if err := remote.Write(ref(t, reg, "e2e/cri", "v1"), img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	cfgDigest, _ := img.ConfigName()
	blobs := imageBlobs(t, img)
	b := startBerth(t, berthOpts{Registries: map[string]string{up.Addr: "http://" + up.Addr}, Default: up.Addr})
	fallback := newFallbackServer(t)
	image := up.Addr + "/e2e/cri:v1"

	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			front := newCountingProxy(t, b.Addr) // what containerd asks berth
			c := startContainerdBin(t, rt.bin, rt.ctr, rt.config)
			c.mirrorWithServer(t, up.Addr, front.Addr, fallback.Addr)
			out := c.crictl(t, "pull", image)
			if !strings.Contains(out, cfgDigest.String()) {
				t.Errorf("crictl pull: %s", out)
			}
			var st struct {
				Status struct {
					ID          string   `json:"id"`
					RepoTags    []string `json:"repoTags"`
					RepoDigests []string `json:"repoDigests"`
				} `json:"status"`
			}
			if err := json.Unmarshal([]byte(c.crictl(t, "inspecti", "-o", "json", image)), &st); err != nil {
				t.Fatal(err)
			}
			if st.Status.ID != cfgDigest.String() || !contains(st.Status.RepoDigests, up.Addr+"/e2e/cri@"+d.String()) {
				t.Errorf("crictl inspecti: %+v, want id %s and digest %s", st.Status, cfgDigest, d)
			}
			// Every blob and the manifest came through berth.
			got := front.BlobGets()
			for _, bl := range blobs {
				if got[bl] == 0 {
					t.Errorf("%s never fetched through berth:\n%s", bl, front.Log())
				}
			}
			if front.Manifests() == 0 {
				t.Errorf("no manifest request reached berth:\n%s", front.Log())
			}
			ranged := strings.Contains(front.Log(), blobs[1]+"?ns="+url.QueryEscape(up.Addr)+" -> 206 (Range: bytes=")
			if ranged != rt.ranges {
				t.Errorf("Range requests for the big layer: %v, want %v (which pull path ran?)", ranged, rt.ranges)
			}
			if n := fallback.conns.Load(); n != 0 {
				t.Errorf("the fallback server got %d connections: containerd bypassed berth", n)
			}
			if t.Failed() {
				t.Logf("%s asked berth:\n%s", rt.name, front.Log())
			}
		})
	}
	assertBlobsOnce(t, blobs, up)
	if n := up.Direct(); n != 0 {
		t.Errorf("the upstream got %d manifest or blob requests not from berth:\n%s", n, up.Log())
	}
}

// TestCRITransferServiceConfigPathList: containerd 2.x's transfer service
// does not split a config_path that lists several directories (the
// default /etc/containerd/certs.d:/etc/docker/certs.d on EKS and in 2.2,
// containerd issues 12415 and 12636): berth's hosts.toml is ignored and the
// CRI pull bypasses berth. `berth hosts-toml --containerd-config` refuses
// that config with the fix; after --fix-containerd-config (and a restart)
// the same CRI pull goes through berth, and the fallback gets nothing.
func TestCRITransferServiceConfigPathList(t *testing.T) {
	t.Parallel()
	berthBin := needBerth(t)
	needRoot(t)
	tool(t, "crictl")
	bin, ctr := containerd2Tool(t, "containerd"), containerd2Tool(t, "ctr")
	reg := startRegistry(t, "", 200)
	up := newCountingProxy(t, reg)
	img := randomImage(t, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer, runtime.GOARCH, 64<<10)
	if err := remote.Write(ref(t, reg, "e2e/cri-list", "v1"), img); err != nil {
		t.Fatal(err)
	}
	b := startBerth(t, berthOpts{Registries: map[string]string{up.Addr: "http://" + up.Addr}, Default: up.Addr})
	front := newCountingProxy(t, b.Addr)
	fallback := newFallbackServer(t)
	image := up.Addr + "/e2e/cri-list:v1"

	listed := strings.Replace(criContainerd2(false), `config_path = "{{dir}}/hosts"`, `config_path = "{{dir}}/hosts:{{dir}}/docker-certs.d"`, 1)
	c := startContainerdBin(t, bin, ctr, listed)
	c.mirrorWithServer(t, up.Addr, front.Addr, fallback.Addr)
	out, err := run(t, 3*time.Minute, nil, tool(t, "crictl"), "--config", c.crictlConfig(t), "pull", image)
	if n := len(front.Log()); n != 0 {
		t.Fatalf("with config_path listing two directories, berth was asked (has containerd changed?):\n%s", front.Log())
	}
	if up.Direct() == 0 {
		t.Errorf("the bypassing pull did not reach the registry either (err %v): %s\n%s", err, out, up.Log())
	}

	// berth's check refuses the config, then fixes it.
	cfgFile := filepath.Join(c.dir, "config.toml")
	args := []string{"hosts-toml", "--dir", c.hosts, "--mirror", "http://" + front.Addr, "--registry", up.Addr + "=http://" + fallback.Addr, "--containerd-config", cfgFile}
	if out, err := run(t, time.Minute, nil, berthBin, args...); err == nil || !strings.Contains(out, `config_path = "`+c.hosts+`"`) {
		t.Fatalf("hosts-toml accepted a config_path the transfer service ignores: %v\n%s", err, out)
	}
	mustRun(t, time.Minute, nil, berthBin, append(args, "--fix-containerd-config")...)
	fixed, err := os.ReadFile(cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	// "Restart": a containerd of its own dir with the fixed file.
	c2 := startContainerdBin(t, bin, ctr, strings.ReplaceAll(string(fixed), c.dir, "{{dir}}"))
	c2.mirrorWithServer(t, up.Addr, front.Addr, fallback.Addr)
	c2.crictl(t, "pull", image)
	got := front.BlobGets()
	for _, bl := range imageBlobs(t, img) {
		if got[bl] == 0 {
			t.Errorf("after the fix, %s never came through berth:\n%s", bl, front.Log())
		}
	}
	if n := fallback.conns.Load(); n != 0 {
		t.Errorf("the fallback server got %d connections", n)
	}
}
