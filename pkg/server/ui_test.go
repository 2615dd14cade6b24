package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/server"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// statusNode is a node that pulled an image twice through a real upstream
// (misses, then hits) and has a fill held open half way. The upstream's
// registry has a first endpoint that answers 503 (down for maintenance), so
// it is failing and the registry degraded; a second registry is never asked.
func statusNode(t *testing.T) (n *node, fill digest.Digest, failing string) {
	t.Helper()
	up := upstreamtest.New(t)
	img, err := random.Image(32<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	up.Push(t, "team/webapp", "v1.2", img)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"down for maintenance"}]}`)
	}))
	t.Cleanup(down.Close)
	n = startNode(t, up, func(c *config.Config) {
		c.Prefetch.Enabled = false // the client's own misses and hits, exactly: a prefetch would race them (prefetch_test.go counts it)
		c.Registries[0].Endpoints = append([]string{down.URL}, c.Registries[0].Endpoints...)
		c.Registries[0].FailBackoff = config.Duration(time.Hour) // failing for the whole test
		c.Registries = append(c.Registries, config.Registry{Name: "never-asked.test", Endpoints: []string{"https://never-asked.test"}})
	})
	blobs, _ := imageBlobs(t, img)
	for range 2 {
		if resp, body := get(t, http.MethodGet, n.URL+"/v2/team/webapp/manifests/v1.2", "Accept", manifestAccept); resp.StatusCode != 200 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		for _, b := range blobs {
			if resp, _ := get(t, http.MethodGet, n.URL+"/v2/team/webapp/blobs/"+b); resp.StatusCode != 200 {
				t.Fatalf("blob %s: %d", b, resp.StatusCode)
			}
		}
	}
	// A fill whose source has sent half of its bytes and waits.
	data := make([]byte, 1<<20)
	fill = digest.FromBytes(data)
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(io.ErrUnexpectedEOF) })
	b, err := n.Store().Fill(context.Background(), fill, cache.FillMeta{Repo: "team/held"}, func(context.Context, int64) (io.ReadCloser, int64, string, error) {
		return pr, int64(len(data)), "upstream", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	go pw.Write(data[:len(data)/2])
	for deadline := time.Now().Add(10 * time.Second); ; {
		if f := n.Store().Fills(); len(f) == 1 && f[0].Written == int64(len(data)/2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fill never reached half: %+v", n.Store().Fills())
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	return n, fill, down.URL
}

func TestStatusAPIAndPage(t *testing.T) {
	n, fill, failing := statusNode(t)
	resp, body := get(t, http.MethodGet, n.AdminURL+"/ui/api/status")
	if resp.StatusCode != 200 {
		t.Fatalf("/ui/api/status: %d %s", resp.StatusCode, body)
	}
	var st server.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Images) != 1 || st.Images[0].Name != "team/webapp" || st.Images[0].Pulls != 2 || len(st.Images[0].Tags) != 1 || st.Images[0].Tags[0].Tag != "v1.2" {
		t.Errorf("images %+v", st.Images)
	}
	if st.Hits["blob"] != 3 || st.Misses["blob"] != 3 || st.HitRatio <= 0 {
		t.Errorf("hits %v misses %v ratio %v", st.Hits, st.Misses, st.HitRatio)
	}
	if len(st.Fills) != 1 || st.Fills[0].Digest != fill || st.Fills[0].Repo != "team/held" || st.Fills[0].Written != 512<<10 || st.Fills[0].Readers != 1 {
		t.Errorf("fills %+v", st.Fills)
	}
	if st.LastMirror.IsZero() || st.Version.GoVersion == "" {
		t.Errorf("lastMirror %v version %+v", st.LastMirror, st.Version)
	}
	checkUpstreams(t, st.Upstreams, failing)
	if strings.Contains(string(body), "password") {
		t.Errorf("status shows a password field: %s", body)
	}
	resp, page := get(t, http.MethodGet, n.AdminURL+"/ui/")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/ui/: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"team/webapp", "v1.2", "team/held", fill.String()[:19], `<progress max="1048576" value="524288">`, "blob 3", `src="/ui/app.js"`,
		`data-endpoint="` + failing + `" data-state="failing"`, "down for maintenance", `data-registry-state="degraded"`, "1 degraded, 1 unused"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, external := range []string{"http://", "https://", "//cdn"} {
		if strings.Contains(strings.ReplaceAll(string(page), `xmlns="http://www.w3.org/2000/svg"`, ""), "src=\""+external) {
			t.Errorf("page loads an external asset (%s)", external)
		}
	}
	if resp, js := get(t, http.MethodGet, n.AdminURL+"/ui/app.js"); resp.StatusCode != 200 || !strings.Contains(string(js), "data-ready") {
		t.Errorf("/ui/app.js: %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.MethodGet, n.URL+"/ui/"); resp.StatusCode == 200 {
		t.Error("the status page is on the registry listener; it belongs to the admin listener")
	}
}

// checkUpstreams checks the status API's upstream health: the node's
// registry degraded, its 503 endpoint failing with the error and a probe
// an hour away, its good endpoint ok; the other registry unused.
func checkUpstreams(t *testing.T, ups []upstream.RegistryHealth, failing string) {
	t.Helper()
	if len(ups) != 2 {
		t.Fatalf("upstreams %+v", ups)
	}
	var reg, never upstream.RegistryHealth
	for _, u := range ups {
		if u.Name == "never-asked.test" {
			never = u
		} else {
			reg = u
		}
	}
	if never.State != upstream.StateUnused || reg.State != upstream.StateDegraded || reg.Backoff != "1h0m0s" || len(reg.Endpoints) != 2 {
		t.Fatalf("upstreams %+v", ups)
	}
	bad, good := reg.Endpoints[0], reg.Endpoints[1]
	if bad.URL != failing || bad.State != upstream.StateFailing || !strings.Contains(bad.LastError, "down for maintenance") ||
		bad.Failures != 1 || time.Until(bad.RetryAt) < 50*time.Minute || !bad.LastSuccess.IsZero() {
		t.Errorf("failing endpoint %+v", bad)
	}
	if good.State != upstream.StateOK || good.LastSuccess.IsZero() || good.LastError != "" || !good.RetryAt.IsZero() {
		t.Errorf("good endpoint %+v", good)
	}
}

// upstreamRows returns the rows of the upstream health table by endpoint URL.
func upstreamRows(t *testing.T, dom string) map[string]string {
	t.Helper()
	rows := map[string]string{}
	for _, m := range regexp.MustCompile(`(?s)<tr data-registry="[^"]*" data-endpoint="([^"]*)".*?</tr>`).FindAllStringSubmatch(dom, -1) {
		rows[m[1]] = m[0]
	}
	if len(rows) != 3 {
		t.Fatalf("upstream table has %d endpoint rows, want 3:\n%s", len(rows), dom)
	}
	return rows
}

// chromiumBin finds Debian's chromium, or skips (fails in CI).
func chromiumBin(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found (test/tools.sh installs it)")
	}
	t.Skip("chromium not found (test/tools.sh installs it)")
	return ""
}

func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
		"--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}

// Headless Chromium loads the status page of a node that pulled through a
// real upstream: the DOM, after its script ran, shows the image, the hit
// counts and the fill in progress. The screenshot is kept
// (BERTH_STATUS_SCREENSHOT=path writes it there too: docs/status-page.png).
func TestStatusPageInChromium(t *testing.T) {
	bin := chromiumBin(t)
	n, fill, failing := statusNode(t)
	dom := chromium(t, bin, "--virtual-time-budget=3000", "--dump-dom", n.AdminURL+"/ui/")
	for _, want := range []string{`data-ready="1"`, "team/webapp", "v1.2", "team/held", fill.String()[:19], "blob 3", "<progress"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q", want)
		}
	}
	// Upstream health: the 503 endpoint failing with its error and the
	// time of its next probe, the working one ok with a last success, the
	// registry degraded, the other registry unused.
	rows := upstreamRows(t, dom)
	if r := rows[failing]; !strings.Contains(r, `data-state="failing"`) || !strings.Contains(r, "down for maintenance") || !strings.Contains(r, "open: probe in ") || !strings.Contains(r, "back-off 1h0m0s") {
		t.Errorf("failing endpoint's row: %s", r)
	}
	var okRows int
	for url, r := range rows {
		if url != failing && strings.Contains(r, `data-state="ok"`) && strings.Contains(r, " ago</td>") && strings.Contains(r, "closed") {
			okRows++
		}
	}
	if okRows != 1 || !strings.Contains(dom, `data-registry-state="degraded"`) || !strings.Contains(dom, `data-registry-state="unused"`) {
		t.Errorf("upstream rows %q", rows)
	}
	shot := filepath.Join(t.TempDir(), "status.png")
	if p := os.Getenv("BERTH_STATUS_SCREENSHOT"); p != "" {
		shot = p
	}
	chromium(t, bin, "--window-size=1100,1300", "--hide-scrollbars", "--screenshot="+shot, n.AdminURL+"/ui/")
	if b, err := os.ReadFile(shot); err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(b), err)
	}
}
