package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// clientsEnv is one berth in front of two upstream registries: one known
// by its loopback address (loop), one as docker.io (hub). Each upstream
// has a counting proxy between berth and it.
type clientsEnv struct {
	b         *berth
	loop, hub *countingProxy
	loopName  string // the loopback registry's name as clients write it

	app, multi, art, chart testImage // on loop
	dock                   testImage // Docker schema 2, on hub as library/dockerimg
	chartTgz, artFile      []byte
}

func newClientsEnv(t *testing.T) *clientsEnv {
	t.Helper()
	needBerth(t)
	loopReg, hubReg := startRegistry(t, "", 200), startRegistry(t, "", 200)
	e := &clientsEnv{loop: newCountingProxy(t, loopReg), hub: newCountingProxy(t, hubReg)}
	e.loopName = e.loop.Addr
	e.app = pushImage(t, loopReg, "e2e/app", "v1", false)
	e.multi = pushIndex(t, loopReg, "e2e/multi", "v1")
	e.dock = pushImage(t, hubReg, "library/dockerimg", "v1", true)
	e.chart, e.chartTgz = pushHelmChart(t, loopReg, "charts", "mychart", "0.1.0")
	e.artFile = []byte("hello from berth's e2e test\n")
	e.art = pushArtifact(t, loopReg, "e2e/artifact", "v1", "application/vnd.berth.e2e.test",
		blob{mt: "application/vnd.oci.empty.v1+json", data: []byte("{}")},
		blob{mt: "text/plain", data: e.artFile, annotations: map[string]string{"org.opencontainers.image.title": "hello.txt"}})
	e.b = startBerth(t, berthOpts{
		Registries: map[string]string{e.loopName: "http://" + e.loop.Addr, "docker.io": "http://" + e.hub.Addr},
		Default:    e.loopName,
	})
	return e
}

// TestClients pulls the test images through one berth with every real
// client at once, checks each result against the upstream's digests, and
// then checks that the upstreams served each blob exactly once in all,
// each from the registry it lives on.
func TestClients(t *testing.T) {
	t.Parallel()
	e := newClientsEnv(t)
	// Every client at once, whatever -parallel says: they share blobs, so
	// berth must deduplicate fetches in flight.
	clients := map[string]func(*testing.T){"containerd": e.containerd, "skopeo": e.skopeo,
		"crane": e.crane, "helm": e.helm, "oras": e.oras}
	var wg sync.WaitGroup
	for name, f := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	wg.Wait()
	// oras pull skips the artifact's empty config ({}): only its layer.
	loopBlobs := e.art.Blobs[1:]
	for _, ti := range []testImage{e.app, e.multi, e.chart} {
		loopBlobs = append(loopBlobs, ti.All...)
	}
	assertBlobsOnce(t, loopBlobs, e.loop)
	assertBlobsOnce(t, e.dock.Blobs, e.hub)
}

func (e *clientsEnv) containerd(t *testing.T) {
	c := startContainerd(t)
	c.mirror(t, e.loopName, e.b.Addr)
	c.mirror(t, "docker.io", e.b.Addr)
	c.pull(t, e.loopName+"/"+e.app.Repo+":"+e.app.Tag, e.app)
	c.pull(t, e.loopName+"/"+e.multi.Repo+":"+e.multi.Tag, e.multi)
	// docker.io/library/dockerimg: containerd asks berth with ns=docker.io.
	c.pull(t, "docker.io/library/dockerimg:v1", e.dock)
	// By digest: GET manifests/sha256:... with ns.
	byDigest := e.loopName + "/" + e.app.Repo + "@" + e.app.Digest
	c.ctr(t, "images", "pull", "--hosts-dir", c.hosts, byDigest)
	if ls := c.ctr(t, "images", "ls", "-q"); !hasLine(ls, byDigest) {
		t.Errorf("ctr images ls: no %s:\n%s", byDigest, ls)
	}
}

func (e *clientsEnv) skopeo(t *testing.T) {
	s := newSkopeo(t, map[string]string{
		e.loopName:  e.b.Addr,                // no ns, no path: berth's default registry
		"docker.io": e.b.Addr + "/docker.io", // the registry as the first path segment
	})
	dir := t.TempDir()
	app, multi, dock := filepath.Join(dir, "app"), filepath.Join(dir, "multi"), filepath.Join(dir, "dock")
	// --preserve-digests: the copy is byte for byte, or it fails.
	s.copy(t, "--preserve-digests", "docker://"+e.loopName+"/e2e/app:v1", "dir:"+app)
	checkSkopeoDir(t, app, e.app, e.app.Blobs)
	// skopeo 1.9 re-serializes an index it copies with --all (so not with
	// --preserve-digests): the index bytes differ, its manifests must not.
	s.copy(t, "--all", "docker://"+e.loopName+"/e2e/multi:v1", "oci:"+multi+":v1")
	checkBlobFiles(t, filepath.Join(multi, "blobs", "sha256"), append(e.multi.Children, e.multi.All...))
	s.copy(t, "--preserve-digests", "docker://docker.io/library/dockerimg:v1", "dir:"+dock)
	checkSkopeoDir(t, dock, e.dock, e.dock.Blobs)
	// inspect: the manifest and the config through the mirror. --no-tags:
	// skopeo lists tags at the registry itself, never at a mirror.
	out := s.run(t, "inspect", "--no-tags", "docker://docker.io/library/dockerimg:v1")
	var info struct {
		Digest       string
		Architecture string
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &info); err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	if info.Digest != e.dock.Digest || info.Architecture != runtime.GOARCH {
		t.Errorf("skopeo inspect: digest %s arch %s, want %s and %s", info.Digest, info.Architecture, e.dock.Digest, runtime.GOARCH)
	}
}

func (e *clientsEnv) crane(t *testing.T) {
	crane := tool(t, "crane")
	env := []string{"HOME=" + t.TempDir()}
	craneRun := func(args ...string) string {
		return mustRun(t, 3*time.Minute, env, crane, append([]string{"--insecure"}, args...)...)
	}
	cases := []struct {
		name string
		ref  string
		want testImage
	}{
		{"default registry", e.b.Addr + "/e2e/app:v1", e.app},
		{"registry in path", e.b.Addr + "/docker.io/library/dockerimg:v1", e.dock},
		{"index", e.b.Addr + "/e2e/multi:v1", e.multi},
	}
	if tags := strings.Fields(craneRun("ls", e.b.Addr+"/docker.io/library/dockerimg")); len(tags) != 1 || tags[0] != "v1" {
		t.Errorf("crane ls through berth: %v, want [v1]", tags)
	}
	for _, c := range cases {
		if got := strings.TrimSpace(craneRun("digest", c.ref)); got != c.want.Digest {
			t.Errorf("%s: crane digest %s = %q, want %s", c.name, c.ref, got, c.want.Digest)
		}
		m := craneRun("manifest", c.ref)
		if got := digestOf([]byte(m)); got != c.want.Digest {
			t.Errorf("%s: crane manifest %s hashes to %s, want %s", c.name, c.ref, got, c.want.Digest)
		}
		out := filepath.Join(t.TempDir(), "layout")
		craneRun("pull", "--format", "oci", "--platform", "linux/"+runtime.GOARCH, c.ref, out)
		want, blobs := c.want, c.want.Blobs
		if len(c.want.Children) > 0 { // with --platform crane writes the GOARCH child
			want.Digest = c.want.Children[0]
		}
		checkOCILayout(t, out, want, blobs)
	}
}

func (e *clientsEnv) helm(t *testing.T) {
	helm := tool(t, "helm")
	home := t.TempDir()
	env := []string{"HOME=" + home, "HELM_CACHE_HOME=" + home + "/cache", "HELM_CONFIG_HOME=" + home + "/config",
		"HELM_DATA_HOME=" + home + "/data", "HELM_REGISTRY_CONFIG=" + home + "/registry.json"}
	out := t.TempDir()
	mustRun(t, 3*time.Minute, env, helm, "pull", "oci://"+e.b.Addr+"/charts/mychart", "--version", "0.1.0",
		"--plain-http", "-d", out)
	got, err := os.ReadFile(filepath.Join(out, "mychart-0.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, e.chartTgz) {
		t.Errorf("helm pull: chart is %s, want %s", digestOf(got), digestOf(e.chartTgz))
	}
	// Without --version helm finds the newest tag through tags/list.
	show := mustRun(t, 3*time.Minute, env, helm, "show", "chart", "oci://"+e.b.Addr+"/charts/mychart", "--plain-http")
	if !strings.Contains(show, "version: 0.1.0") {
		t.Errorf("helm show chart: no version 0.1.0:\n%s", show)
	}
}

func (e *clientsEnv) oras(t *testing.T) {
	oras := tool(t, "oras")
	env := []string{"HOME=" + t.TempDir()}
	ref := e.b.Addr + "/e2e/artifact:v1"
	out := t.TempDir()
	mustRun(t, 3*time.Minute, env, oras, "pull", "--plain-http", "-o", out, ref)
	got, err := os.ReadFile(filepath.Join(out, "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, e.artFile) {
		t.Errorf("oras pull: hello.txt = %q, want %q", got, e.artFile)
	}
	res := mustRun(t, time.Minute, env, oras, "resolve", "--plain-http", ref)
	if strings.TrimSpace(res) != e.art.Digest {
		t.Errorf("oras resolve %s = %q, want %s", ref, res, e.art.Digest)
	}
	// The upstream has no referrers API: oras falls back to the tag schema.
	disc := mustRun(t, time.Minute, env, oras, "discover", "--plain-http", "--format", "json", ref)
	if !strings.Contains(disc, e.art.Digest) {
		t.Errorf("oras discover %s: no subject digest in:\n%s", ref, disc)
	}
}
