package security

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-registry/berth/test/proctest"
	"github.com/opencontainers/go-digest"
	"go.yaml.in/yaml/v3"
)

// berth is a berth process serving on a loopback port.
type berth struct{ *proctest.Berth }

// startBerth runs `berth serve` on cfg (a config file as a YAML tree;
// listen.addr, admin.addr and cache.dir are filled in unless set) until
// the test ends. It returns once /readyz answers 200.
func startBerth(t *testing.T, cfg map[string]any) *berth {
	t.Helper()
	if _, ok := cfg["log"]; !ok {
		cfg["log"] = map[string]any{"level": "debug"}
	}
	if _, ok := cfg["shutdownGrace"]; !ok {
		cfg["shutdownGrace"] = "5s"
	}
	return &berth{proctest.RunBerth(t, needBerth(t), cfg)}
}

// startBerthAt is startBerth listening on addr.
func startBerthAt(t *testing.T, addr string, cfg map[string]any) *berth {
	t.Helper()
	listen, _ := cfg["listen"].(map[string]any) // other listen settings (limits, timeouts) stay
	if listen == nil {
		listen = map[string]any{}
	}
	listen["addr"] = addr
	cfg["listen"] = listen
	return startBerth(t, cfg)
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// plain is the tests' HTTP client: no connection outlives its request, so
// berth's connection count returns to its baseline between requests.
var plain = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Minute}

var freeAddr = proctest.FreeAddr

// answer is what a client got: status, errcode (if any) and body.
type answer struct {
	Status int
	Code   string
	Body   []byte
	Header http.Header
	Err    error // a body that broke
}

// get asks berth for /v2/<path> of registry ns (none when ""), reading the
// whole body.
func (b *berth) get(t *testing.T, method, path, ns string) answer {
	t.Helper()
	u := b.URL + "/v2/" + path
	if ns != "" {
		u += "?ns=" + ns
	}
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "+
		"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := plain.Do(req)
	if err != nil {
		return answer{Err: err}
	}
	defer resp.Body.Close()
	body, rerr := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode, Body: body, Header: resp.Header, Err: rerr}
	if resp.StatusCode >= 400 {
		a.Code = proctest.ErrCode(body)
	}
	return a
}

// wantError fails t unless a is an errcode answer with status and code.
func wantError(t *testing.T, what string, a answer, status int, code string) {
	t.Helper()
	if a.Status != status || a.Code != code {
		t.Errorf("%s: got %d %q (%v) %.300s, want %d %s", what, a.Status, a.Code, a.Err, a.Body, status, code)
	}
}

// usage is what berth holds that must return to its baseline.
type usage struct {
	Goroutines int
	FDs        int
	TempFiles  int
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d temp files", u.Goroutines, u.FDs, u.TempFiles)
}

// usage measures berth: goroutines from its Go collector, fds from /proc,
// temp files in the store's tmp/.
func (b *berth) usage(t *testing.T) usage {
	t.Helper()
	var u usage
	_, g := series(b.scrape(t), "go_goroutines")
	u.Goroutines = int(g)
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", b.Cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	u.FDs = len(fds)
	tmp, _ := os.ReadDir(filepath.Join(b.CacheDir, "tmp"))
	u.TempFiles = len(tmp)
	return u
}

// settle waits (bounded) until berth is back at base: no more goroutines
// or fds than then, and no temp file. closeConns drops the idle
// connections berth holds to the test's servers first, as an upstream
// would after its keep-alive timeout.
func (b *berth) settle(t *testing.T, base usage, closeConns func()) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	var u usage
	for {
		if closeConns != nil {
			closeConns()
		}
		u = b.usage(t)
		if u.Goroutines <= base.Goroutines && u.FDs <= base.FDs && u.TempFiles == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling another process
	}
	t.Errorf("berth did not return to its baseline in 45s: now %v, baseline %v", u, base)
	if resp, err := plain.Get(b.AdminURL + "/debug/pprof/goroutine?debug=1"); err == nil {
		dump, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		t.Logf("berth's goroutines:\n%s", dump)
	}
}

// blobFiles returns every digest the store holds as a file, and fails t on
// a file whose bytes do not match its name.
func (b *berth) blobFiles(t *testing.T) map[digest.Digest]bool {
	t.Helper()
	got := map[digest.Digest]bool{}
	root := filepath.Join(b.CacheDir, "blobs")
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		alg := filepath.Base(filepath.Dir(filepath.Dir(p)))
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), fi.Name())
		f, err := os.Open(p)
		if err != nil {
			t.Errorf("store file %s: %v", p, err)
			return nil
		}
		defer f.Close()
		v := d.Verifier()
		if _, err := io.Copy(v, f); err != nil || !v.Verified() {
			t.Errorf("store file %s does not match its digest", d)
		}
		got[d] = true
		return nil
	})
	return got
}

// wantNotStored fails t if the store holds any of ds.
func (b *berth) wantNotStored(t *testing.T, ds ...digest.Digest) {
	t.Helper()
	files := b.blobFiles(t)
	for _, d := range ds {
		if files[d] {
			t.Errorf("the store holds %s", d)
		}
	}
}
