package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// accessEnv is one berth with client auth in front of two upstreams: a
// private registry berth holds credentials for (so it serves it to
// authenticated clients only, its default) and a public one as docker.io
// (anonymous). The private upstream itself is a plain registry: what is
// under test is berth's door, not the upstream's.
type accessEnv struct {
	b             *berth
	priv, pub     *countingProxy
	privName      string
	app, other    testImage // on priv: team/app:v1, team/other:v1
	chart         testImage // on priv: charts/secret:0.1.0
	chartTgz      []byte
	public        testImage // on pub: library/pub:v1
	user, pass    string    // an htpasswd user
	tokName, tok  string    // a machine token
	htpasswd, tks string    // the files
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	needBerth(t)
	privReg, pubReg := startRegistry(t, "", 200), startRegistry(t, "", 200)
	e := &accessEnv{priv: newCountingProxy(t, privReg), pub: newCountingProxy(t, pubReg),
		user: "alice", pass: "wonderland-e2e", tokName: "ci", tok: "berth-e2e-token-6f1c0d"}
	e.privName = e.priv.Addr
	e.app = pushImage(t, privReg, "team/app", "v1", false)
	e.other = pushImage(t, privReg, "team/other", "v1", false)
	e.chart, e.chartTgz = pushHelmChart(t, privReg, "charts", "secret", "0.1.0")
	e.public = pushImage(t, pubReg, "library/pub", "v1", true)

	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte(e.pass), bcrypt.DefaultCost)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(e.tok))
	e.htpasswd, e.tks = filepath.Join(dir, "htpasswd"), filepath.Join(dir, "tokens")
	for f, body := range map[string]string{
		e.htpasswd: e.user + ":" + string(hash) + "\n",
		e.tks:      e.tokName + ":sha256:" + hex.EncodeToString(sum[:]) + "\n",
	} {
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.b = startBerth(t, berthOpts{
		Registries: map[string]string{e.privName: "http://" + e.priv.Addr, "docker.io": "http://" + e.pub.Addr},
		// The private registry is the default: clients name it by leaving
		// the registry out (its loopback name has a port, which no image
		// reference can carry as a path segment).
		Default: e.privName,
		Creds:   map[string][2]string{e.privName: {"berth-puller", "upstream-secret"}},
		Access:  map[string]string{e.privName: ""}, // the default a registry with credentials gets
		Config:  fmt.Sprintf("auth:\n  htpasswd: %q\n  tokens: %q\n", e.htpasswd, e.tks),
	})
	return e
}

func (e *accessEnv) privRef(repo, tag string) string {
	return e.b.Addr + "/" + repo + ":" + tag
}

// TestClientAccess: containerd, skopeo, crane and helm pull a private
// image through berth with credentials (htpasswd user or machine token)
// and fail with 401 without; a public image pulls anonymously at the same
// time. Then, as an attacker who knows the private digests: they are not
// served under another repository or registry, from disk or otherwise.
func TestClientAccess(t *testing.T) {
	t.Parallel()
	e := newAccessEnv(t)
	clients := map[string]func(*testing.T){"containerd": e.containerd, "skopeo": e.skopeo, "crane": e.crane, "helm": e.helm}
	var wg sync.WaitGroup
	for name, f := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.Run(name, f)
		}()
	}
	wg.Wait()
	t.Run("digests do not cross repositories", e.crossRepo)
	t.Run("admin surfaces are not on the registry's port", func(t *testing.T) {
		for _, p := range []string{"/metrics", "/debug/audit", "/debug/pprof/"} {
			if code, _ := get(t, "http://"+e.b.Addr+p); code != http.StatusNotFound {
				t.Errorf("GET %s on the registry's port: %d, want 404", p, code)
			}
			if code, _ := get(t, "http://"+e.b.Admin+p); code != http.StatusOK {
				t.Errorf("GET %s on the admin port: %d, want 200", p, code)
			}
		}
	})
}

// wantUnauthorized checks a client's failure: it ran, failed, and says why.
func wantUnauthorized(t *testing.T, what, out string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s without credentials succeeded:\n%s", what, out)
		return
	}
	low := strings.ToLower(out)
	// helm (oras-go) says it met a Basic challenge it has nothing for.
	if !strings.Contains(low, "401") && !strings.Contains(low, "unauthorized") && !strings.Contains(low, "authentication required") &&
		!strings.Contains(low, "basic credential not found") {
		t.Errorf("%s without credentials failed, but not with 401/unauthorized:\n%s", what, out)
	}
}

func (e *accessEnv) crane(t *testing.T) {
	crane := tool(t, "crane")
	anon := []string{"HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir()}
	login := func(user, pass string) []string {
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, e.b.Addr, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{"HOME=" + t.TempDir(), "DOCKER_CONFIG=" + dir}
	}
	ref := e.privRef("team/app", "v1")
	out, err := run(t, time.Minute, anon, crane, "--insecure", "digest", ref)
	wantUnauthorized(t, "crane digest", out, err)
	for _, env := range [][]string{login(e.user, e.pass), login(e.tokName, e.tok)} {
		if got := strings.TrimSpace(mustRun(t, time.Minute, env, crane, "--insecure", "digest", ref)); got != e.app.Digest {
			t.Errorf("crane digest %s = %q, want %s", ref, got, e.app.Digest)
		}
	}
	layout := filepath.Join(t.TempDir(), "layout")
	mustRun(t, 3*time.Minute, login(e.user, e.pass), crane, "--insecure", "pull", "--format", "oci", ref, layout)
	checkOCILayout(t, layout, e.app, e.app.Blobs)
	// The public image, anonymously, at the same time.
	pub := filepath.Join(t.TempDir(), "pub")
	mustRun(t, 3*time.Minute, anon, crane, "--insecure", "pull", "--format", "oci", e.b.Addr+"/docker.io/library/pub:v1", pub)
	checkOCILayout(t, pub, e.public, e.public.Blobs)
}

func (e *accessEnv) skopeo(t *testing.T) {
	s := newSkopeo(t, nil)
	src := "docker://" + e.privRef("team/app", "v1")
	dir := filepath.Join(t.TempDir(), "app")
	out, err := s.try(t, "copy", "--retry-times", "0", "--src-tls-verify=false", src, "dir:"+dir)
	wantUnauthorized(t, "skopeo copy", out, err)
	s.copy(t, "--preserve-digests", "--src-tls-verify=false", "--src-creds", e.user+":"+e.pass, src, "dir:"+dir)
	checkSkopeoDir(t, dir, e.app, e.app.Blobs)
	// A machine token as the password of its name: containers/image sends
	// --registry-token only to a Bearer challenge, and berth's is Basic.
	tokDir := filepath.Join(t.TempDir(), "tok")
	s.copy(t, "--preserve-digests", "--src-tls-verify=false", "--src-creds", e.tokName+":"+e.tok, src, "dir:"+tokDir)
	checkSkopeoDir(t, tokDir, e.app, e.app.Blobs)
	pub := filepath.Join(t.TempDir(), "pub")
	s.copy(t, "--preserve-digests", "--src-tls-verify=false", "docker://"+e.b.Addr+"/docker.io/library/pub:v1", "dir:"+pub)
	checkSkopeoDir(t, pub, e.public, e.public.Blobs)
}

func (e *accessEnv) helm(t *testing.T) {
	helm := tool(t, "helm")
	home := t.TempDir()
	env := []string{"HOME=" + home, "HELM_CACHE_HOME=" + home + "/cache", "HELM_CONFIG_HOME=" + home + "/config",
		"HELM_DATA_HOME=" + home + "/data", "HELM_REGISTRY_CONFIG=" + home + "/registry.json"}
	chart := "oci://" + e.b.Addr + "/charts/secret"
	out := t.TempDir()
	o, err := run(t, 3*time.Minute, env, helm, "pull", chart, "--version", "0.1.0", "--plain-http", "-d", out)
	wantUnauthorized(t, "helm pull", o, err)
	mustRun(t, time.Minute, env, helm, "registry", "login", e.b.Addr, "--insecure", "--username", e.user, "--password", e.pass)
	mustRun(t, 3*time.Minute, env, helm, "pull", chart, "--version", "0.1.0", "--plain-http", "-d", out)
	got, err := os.ReadFile(filepath.Join(out, "secret-0.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, e.chartTgz) {
		t.Errorf("helm pull: chart is %s, want %s", digestOf(got), digestOf(e.chartTgz))
	}
}

func (e *accessEnv) containerd(t *testing.T) {
	c := startContainerd(t)
	c.mirror(t, e.privName, e.b.Addr)
	c.mirror(t, "docker.io", e.b.Addr)
	ref := e.privName + "/team/app:v1"
	out, err := run(t, 3*time.Minute, nil, c.ctrBin, "--address", c.sock, "images", "pull", "--hosts-dir", c.hosts, ref)
	wantUnauthorized(t, "ctr pull", out, err)
	// ctr --user answers berth's basic challenge.
	c.ctr(t, "images", "pull", "--hosts-dir", c.hosts, "--user", e.user+":"+e.pass, ref)
	c.pull(t, "docker.io/library/pub:v1", e.public) // anonymously

	// The node-wide setup: the operator's own hosts.toml (its own mirror
	// first, here a live proxy to the registry that counts what it is
	// asked), into which `berth hosts-toml --prepend` puts berth first
	// with a token header read from a file, which containerd sends with
	// every request to berth, and no --user.
	theirs := newCountingProxy(t, e.priv.Addr)
	file := filepath.Join(c.hosts, e.privName, "hosts.toml")
	own := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", deadAddr(t), theirs.Addr)
	if err := os.WriteFile(file, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	authFile := filepath.Join(t.TempDir(), "authorization")
	if err := os.WriteFile(authFile, []byte("Bearer "+e.tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustRun(t, time.Minute, nil, needBerth(t), "hosts-toml", "--dir", c.hosts, "--mirror", "http://"+e.b.Addr,
		"--registry", e.privName+"=http://"+deadAddr(t), "--prepend", "--authorization-file", authFile)
	if strings.Contains(out, e.tok) {
		t.Errorf("berth hosts-toml printed the token:\n%s", out)
	}
	if b, _ := os.ReadFile(file); !strings.Contains(string(b), "[host.\"http://"+theirs.Addr+"\"]") || !strings.Contains(string(b), "# berth: begin") {
		t.Fatalf("berth hosts-toml --prepend did not keep the operator's file:\n%s\n%s", out, b)
	}
	c.pull(t, e.privName+"/team/other:v1", e.other)
	if log := theirs.Log(); log != "" {
		t.Errorf("containerd asked the operator's mirror, listed after berth:\n%s", log)
	}
	if ls := c.ctr(t, "images", "ls"); !hasLine(ls, ref, e.app.Digest) {
		t.Errorf("ctr images ls: no %s:\n%s", ref, ls)
	}
}

// crossRepo asks for the private content, by digest, where the client may
// read but the content does not live: under the public registry (which
// berth must ask, and which says 404) and under another repository of the
// private registry. The bytes are on berth's disk by now.
func (e *accessEnv) crossRepo(t *testing.T) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(e.user+":"+e.pass))
	do := func(url, auth string) (int, string, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", "*/*")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		return resp.StatusCode, errCode(body.Bytes()), resp.Header.Get("WWW-Authenticate")
	}
	base := "http://" + e.b.Addr + "/v2/"
	for _, d := range append([]string{e.app.Digest}, e.app.Blobs...) {
		kind := "blobs"
		if d == e.app.Digest {
			kind = "manifests"
		}
		// Under the public registry, anonymously: berth asks that registry,
		// which does not have it.
		before := e.pub.Log()
		code, ec, _ := do(base+"docker.io/library/pub/"+kind+"/"+d, "")
		if code != http.StatusNotFound {
			t.Errorf("%s %s under the public registry: %d %s, want 404", kind, d, code, ec)
		}
		// The proxy logs a request once its answer is sent, which may be
		// after berth has answered: wait for the line.
		asked := false
		for deadline := time.Now().Add(10 * time.Second); !asked && time.Now().Before(deadline); {
			asked = strings.Contains(strings.TrimPrefix(e.pub.Log(), before), d)
			if !asked {
				time.Sleep(20 * time.Millisecond) // polling another process's log
			}
		}
		if !asked {
			t.Errorf("%s %s under the public registry was answered without asking that registry:\n%s", kind, d, e.pub.Log())
		}
		// Under the private registry's name, anonymously: asked to log in.
		code, ec, chal := do(base+e.privName+"/team/app/"+kind+"/"+d, "")
		if code != http.StatusUnauthorized || ec != "UNAUTHORIZED" || !strings.HasPrefix(chal, "Basic realm=") {
			t.Errorf("%s %s anonymously: %d %s %q, want 401 UNAUTHORIZED with a Basic challenge", kind, d, code, ec, chal)
		}
		// Another private repository that does not hold it, with
		// credentials: that repository's upstream says 404.
		if code, ec, _ := do(base+e.privName+"/team/nothing/"+kind+"/"+d, basic); code != http.StatusNotFound {
			t.Errorf("%s %s under team/nothing: %d %s, want 404", kind, d, code, ec)
		}
		// Wrong password: 401, even though the content is on disk.
		if code, ec, _ := do(base+e.privName+"/team/app/"+kind+"/"+d, "Basic "+base64.StdEncoding.EncodeToString([]byte(e.user+":nope"))); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong password: %d %s, want 401", kind, d, code, ec)
		}
		if code, ec, _ := do(base+e.privName+"/team/app/"+kind+"/"+d, basic); code != http.StatusOK {
			t.Errorf("%s %s with credentials: %d %s, want 200", kind, d, code, ec)
		}
	}
}
