package upstream

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/config"
)

// credHelperSrc is a Docker credential helper (docker-credential-<name>) for
// tests: `get` reads a server URL on stdin and answers with the user and
// secret in the files beside it, or "credentials not found" for any server
// other than the one in the file "server"; every call is logged.
const credHelperSrc = `package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	exe, _ := os.Executable()
	dir := filepath.Dir(exe)
	read := func(name string) string { b, _ := os.ReadFile(filepath.Join(dir, name)); return strings.TrimSpace(string(b)) }
	in, _ := io.ReadAll(os.Stdin)
	server := strings.TrimSpace(string(in))
	f, _ := os.OpenFile(filepath.Join(dir, "calls"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	fmt.Fprintf(f, "%s %s\n", os.Args[1], server)
	f.Close()
	if len(os.Args) != 2 || os.Args[1] != "get" {
		os.Exit(2)
	}
	if server != read("server") {
		fmt.Print("credentials not found in native keychain")
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(map[string]string{"ServerURL": server, "Username": read("user"), "Secret": read("secret")})
}
`

// credHelper builds the helper as docker-credential-<name> into a new
// directory put first on PATH, and returns that directory.
func credHelper(t *testing.T, name, server, user, secret string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(t.TempDir(), "main.go")
	if err := os.WriteFile(src, []byte(credHelperSrc), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "docker-credential-"+name), src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the credential helper: %v\n%s", err, out)
	}
	for f, v := range map[string]string{"server": server, "user": user, "secret": secret} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return dir
}

func helperCalls(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "calls"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return strings.Fields(strings.ReplaceAll(string(b), "get ", ""))
}

// A registry's credentials come from the Docker config's credHelpers entry
// or its credsStore, by running the real helper program; the helper is
// asked again when its answer is due or refused, so a rotated token
// (ECR, GCR, ACR) is picked up without a restart.
func TestDockerCredentialHelpers(t *testing.T) {
	// Not parallel: puts the helper on PATH.
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	up.push(t, "team/app2", "v1", 100)
	ta := withTokenAuth(t, up, "erin", "token-1")
	ctx := testCtx(t)
	dir := credHelper(t, "berthtest", up.host(), "erin", "token-1")

	for name, cfg := range map[string]string{
		"credHelpers": fmt.Sprintf(`{"credHelpers":{%q:"berthtest"}}`, up.host()),
		"credsStore":  `{"credsStore":"berthtest"}`,
	} {
		path := filepath.Join(t.TempDir(), "config.json")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		before := len(helperCalls(t, dir))
		c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{up.front.URL}, DockerConfig: path})
		for _, repo := range []string{"team/app", "team/app", "team/other"} {
			_, err := c.HeadManifest(ctx, repoOf(c, repo).Manifest("v1"))
			if repo == "team/app" && err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		calls := helperCalls(t, dir)[before:]
		if len(calls) == 0 || calls[len(calls)-1] != up.host() {
			t.Errorf("%s: helper asked for %q, want %s", name, calls, up.host())
		}
		// Asked once when the client was made (for each key it tries), not per request.
		again := len(helperCalls(t, dir))
		if _, err := c.HeadManifest(ctx, repoOf(c, "team/app").Manifest("v1")); err != nil {
			t.Fatal(err)
		}
		if n := len(helperCalls(t, dir)); n != again {
			t.Errorf("%s: the helper ran %d more times for a request, want 0 before its answer is due", name, n-again)
		}
	}

	// The token rotates: the realm takes only the new one, which the helper
	// now gives. The helper's old answer is refused, so it is asked again.
	helperRetry = 0
	t.Cleanup(func() { helperRetry = 10 * time.Second })
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(`{"credsStore":"berthtest"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, config.Registry{Name: "example.test", Endpoints: []string{up.front.URL}, DockerConfig: path})
	if _, err := c.HeadManifest(ctx, repoOf(c, "team/app").Manifest("v1")); err != nil {
		t.Fatal(err)
	}
	ta.pass = "token-2"
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.HeadManifest(ctx, repoOf(c, "team/app2").Manifest("v1")); err != nil {
		t.Errorf("after the helper rotated the token: %v", err)
	}
	if got := ta.askedFor("repository:team/app2:pull"); got != 2 {
		t.Errorf("token requests for the new scope: %d, want the refused one and one with the renewed token", got)
	}
}
