package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
)

func writeDockerConfig(t *testing.T, key, entry string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`{"auths":{%q:%s}}`, key, entry)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDockerConfigCredentials(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	ta := withTokenAuth(t, up, "carol", "pa:ss")
	ctx := testCtx(t)

	auth := base64.StdEncoding.EncodeToString([]byte("carol:pa:ss"))
	cfg := writeDockerConfig(t, "http://"+up.host()+"/", fmt.Sprintf(`{"auth":%q}`, auth))
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, DockerConfig: cfg})
	if _, err := c.HeadManifest(ctx, repoOf(c, "team/app").Manifest("v1")); err != nil {
		t.Fatalf("docker config auth: %v", err)
	}

	// identitytoken: the OAuth2 refresh-token grant.
	ta.pass = "refresh-me"
	cfg2 := writeDockerConfig(t, up.host(), `{"identitytoken":"refresh-me"}`)
	c2 := newClient(t, config.Registry{Endpoints: []string{up.front.URL}, DockerConfig: cfg2})
	if _, err := c2.HeadManifest(ctx, repoOf(c2, "team/app").Manifest("v1")); err != nil {
		t.Fatalf("identity token: %v", err)
	}

	// Reload re-reads the file: a revoked token then fails.
	if err := os.WriteFile(cfg2, []byte(fmt.Sprintf(`{"auths":{%q:{"identitytoken":"revoked"}}}`, up.host())), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c2.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.HeadManifest(ctx, repoOf(c2, "team/other").Manifest("v1")); !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("after reload: %v", err)
	}
}

func TestLoadCredentialsOrder(t *testing.T) {
	// Not parallel: sets the environment.
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dc := writeDockerConfig(t, "https://index.docker.io/v1/", `{"username":"hub","password":"from-docker"}`)
	rc := config.Registry{Name: "docker.io", DockerConfig: dc}
	if c, err := loadCredentials(rc, nil); err != nil || c.Username != "hub" || c.Password != "from-docker" {
		t.Errorf("docker config: %+v, %v", c.Username, err)
	}
	rc.Username, rc.PasswordFile = "op", pw
	if c, err := loadCredentials(rc, nil); err != nil || c.Username != "op" || c.Password != "from-file" {
		t.Errorf("password file: %+v, %v", c.Username, err)
	}
	env := []string{"BERTH_REGISTRY_DOCKER_IO_USERNAME=env", "BERTH_REGISTRY_DOCKER_IO_PASSWORD=from-env"}
	cfg := &config.Config{Registries: []config.Registry{rc}}
	if err := config.ApplyCredentialEnv(cfg, env); err != nil {
		t.Fatal(err)
	}
	if c, err := loadCredentials(cfg.Registries[0], nil); err != nil || c.Username != "env" || c.Password != "from-env" {
		t.Errorf("env: %+v, %v", c.Username, err)
	}
	// The variables have one reader, config.ApplyCredentialEnv: the client
	// itself never looks at the environment.
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if c, err := loadCredentials(rc, nil); err != nil || c.Username != "op" || c.Password != "from-file" {
		t.Errorf("the client read the environment: %+v, %v", c.Username, err)
	}
	rc.PasswordFile = filepath.Join(dir, "missing")
	if _, err := loadCredentials(rc, nil); err == nil {
		t.Error("a missing password file is no error")
	}
}

func TestSecretsStayOutOfLogsAndErrors(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	withTokenAuth(t, up, "dave", "correct-horse")
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, 10)
	rc := config.Registry{Name: "example.test", Endpoints: []string{"http://127.0.0.1:1", up.front.URL}, Username: "dave", Password: "wrong-battery"}
	c, err := New([]config.Registry{rc}, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.HeadManifest(context.Background(), oci.Repo{Registry: "example.test", Name: "team/app"}.Manifest("v1"))
	if !errors.Is(err, oci.ErrUnauthorized) {
		t.Fatalf("wrong password: %v", err)
	}
	families, _ := reg.Gather()
	out := fmt.Sprint(families)
	for name, s := range map[string]string{"log": logs.String(), "error": err.Error(), "metrics": out} {
		if strings.Contains(s, "wrong-battery") || strings.Contains(s, base64.StdEncoding.EncodeToString([]byte("dave:wrong-battery"))) {
			t.Errorf("%s shows the password: %s", name, s)
		}
	}
	if got := counterValue(m.UpstreamErrors.WithLabelValues("example.test", "connect")); got != 1 {
		t.Errorf("connect errors counted %v, want 1", got)
	}
	if got := counterValue(m.UpstreamErrors.WithLabelValues("example.test", "auth")); got != 1 {
		t.Errorf("auth errors counted %v, want 1", got)
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
