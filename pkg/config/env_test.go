package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnvName(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"listen.addr":             "LISTEN_ADDR",
		"listen.tls.certFile":     "LISTEN_TLS_CERT_FILE",
		"cache.maxSize":           "CACHE_MAX_SIZE",
		"cache.gcInterval":        "CACHE_GC_INTERVAL",
		"tagTTL":                  "TAG_TTL",
		"defaultRegistry":         "DEFAULT_REGISTRY",
		"peers.secretFile":        "PEERS_SECRET_FILE",
		"timeouts.tlsHandshake":   "TIMEOUTS_TLS_HANDSHAKE",
		"x.TLSHandshake":          "X_TLS_HANDSHAKE",
		"metrics.topRepos":        "METRICS_TOP_REPOS",
		"peers.rejoinInterval":    "PEERS_REJOIN_INTERVAL",
		"registries.caFile":       "REGISTRIES_CA_FILE",
		"a.httpTLSServerCertFile": "A_HTTP_TLS_SERVER_CERT_FILE",
	} {
		if got := envName(path); got != want {
			t.Errorf("envName(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestEnvVarsCoverScalars(t *testing.T) {
	t.Parallel()
	names := map[string]string{}
	for _, v := range EnvVars() {
		if prev, dup := names[v.Name]; dup {
			t.Errorf("%s names both %s and %s", v.Name, prev, v.Path)
		}
		names[v.Name] = v.Path
	}
	// The names the brief and the chart rely on.
	for _, n := range []string{
		"BERTH_LISTEN_ADDR", "BERTH_CACHE_DIR", "BERTH_CACHE_MAX_SIZE", "BERTH_TAG_TTL", "BERTH_DEFAULT_REGISTRY",
		"BERTH_PEERS_BIND", "BERTH_PEERS_ADVERTISE", "BERTH_PEERS_JOIN", "BERTH_PEERS_SECRET_FILE",
		"BERTH_LOG_LEVEL", "BERTH_LOG_FORMAT", "BERTH_SHUTDOWN_GRACE", "BERTH_PEERS_NODE_NAME",
	} {
		if _, ok := names[n]; !ok {
			t.Errorf("no variable %s", n)
		}
	}
	for n := range names {
		if strings.HasPrefix(n, "BERTH_REGISTRIES") {
			t.Errorf("%s: the registry list has no scalar variable", n)
		}
	}
}

func TestApplyEnv(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  []string
		want func(*Config)
	}{
		{"nothing", []string{"HOME=/root", "PATH=/bin"}, func(*Config) {}},
		{"strings", []string{"BERTH_LISTEN_ADDR=:6000", "BERTH_CACHE_DIR=/data", "BERTH_DEFAULT_REGISTRY=quay.io", "BERTH_LOG_FORMAT=json"}, func(c *Config) {
			c.Listen.Addr, c.Cache.Dir, c.DefaultRegistry, c.Log.Format = ":6000", "/data", "quay.io", "json"
		}},
		{"nested", []string{"BERTH_LISTEN_TLS_ADDR=:5443", "BERTH_LISTEN_TLS_CERT_FILE=c", "BERTH_LISTEN_TLS_KEY_FILE=k"}, func(c *Config) {
			c.Listen.TLS = TLS{Addr: ":5443", CertFile: "c", KeyFile: "k"}
		}},
		{"durations, numbers", []string{"BERTH_TAG_TTL=5m", "BERTH_PEERS_TIMEOUT=250ms", "BERTH_PEERS_ASK_NEXT=4", "BERTH_CACHE_LOW_WATERMARK=0.5", "BERTH_METRICS_TOP_REPOS=7"}, func(c *Config) {
			c.TagTTL, c.Peers.Timeout = Duration(5*time.Minute), Duration(250*time.Millisecond)
			c.Peers.AskNext, c.Cache.LowWatermark, c.Metrics.TopRepos = 4, 0.5, 7
		}},
		{"peers", []string{"BERTH_PEERS_BIND=0.0.0.0:7946", "BERTH_PEERS_ADVERTISE=10.0.0.1:5000", "BERTH_PEERS_JOIN= a.test , b.test:7946,,", "BERTH_PEERS_SECRET_FILE=/k"}, func(c *Config) {
			c.Peers.Bind, c.Peers.Advertise, c.Peers.SecretFile = "0.0.0.0:7946", "10.0.0.1:5000", "/k"
			c.Peers.Join = []string{"a.test", "b.test:7946"}
		}},
		{"empty string overrides", []string{"BERTH_CACHE_MAX_SIZE=", "BERTH_DEFAULT_REGISTRY="}, func(c *Config) {
			c.Cache.MaxSize, c.DefaultRegistry = "", ""
		}},
		{"later entry wins", []string{"BERTH_LOG_LEVEL=debug", "BERTH_LOG_LEVEL=warn"}, func(c *Config) { c.Log.Level = "warn" }},
		{"value with =", []string{"BERTH_CACHE_DIR=/a=b"}, func(c *Config) { c.Cache.Dir = "/a=b" }},
		{"unknown and credential variables left alone", []string{"BERTH_NOPE=1", "BERTH_REGISTRY_DOCKER_IO_PASSWORD=x"}, func(*Config) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, want := mustDefault(t), mustDefault(t)
			cfg.Cache.MaxSize, want.Cache.MaxSize = "10GiB", "10GiB"
			tt.want(want)
			if err := ApplyEnv(cfg, tt.env); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, cfg); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyEnvErrors(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	err := ApplyEnv(cfg, []string{
		"BERTH_TAG_TTL=60", "BERTH_PEERS_ASK_NEXT=two", "BERTH_CACHE_HIGH_WATERMARK=", "BERTH_LOG_LEVEL=debug",
	})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{`BERTH_TAG_TTL: invalid duration "60"`, `BERTH_PEERS_ASK_NEXT: invalid integer "two"`, `BERTH_CACHE_HIGH_WATERMARK: invalid number ""`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if cfg.Log.Level != "debug" {
		t.Errorf("a good variable beside bad ones was not applied: level %q", cfg.Log.Level)
	}
}

func TestUnknownEnv(t *testing.T) {
	t.Parallel()
	got := UnknownEnv([]string{
		"BERTH_LISTEN_ADR=x", "BERTH_LISTEN_ADDR=x", "BERTH_REGISTRY_QUAY_IO_USERNAME=u", "BERTH_REGISTRY_=x", "HOME=/", "BERTH_CONFIG=/etc/berth.yaml",
	})
	if diff := cmp.Diff([]string{"BERTH_CONFIG", "BERTH_LISTEN_ADR", "BERTH_REGISTRY_"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestApplyCredentialEnv(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	cfg.SetRegistry(Registry{Name: "127.0.0.1:5000", Endpoints: []string{"http://127.0.0.1:5000"}, PasswordFile: "/old"})
	cfg.Registries[1].DockerConfig = "/docker.json"
	err := ApplyCredentialEnv(cfg, []string{
		"BERTH_REGISTRY_DOCKER_IO_USERNAME=alice", "BERTH_REGISTRY_DOCKER_IO_PASSWORD=pw1",
		"BERTH_REGISTRY_127_0_0_1_5000_USERNAME=bob", "BERTH_REGISTRY_127_0_0_1_5000_PASSWORD=pw2",
		"BERTH_REGISTRY_REGISTRY_K8S_IO_USERNAME=carol", "BERTH_REGISTRY_REGISTRY_K8S_IO_PASSWORD_FILE=/pw3",
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][4]string{}
	for _, r := range cfg.Registries {
		got[r.Name] = [4]string{r.Username, r.Password, r.PasswordFile, r.DockerConfig}
	}
	want := map[string][4]string{
		"docker.io":       {"alice", "pw1", "", ""},
		"registry.k8s.io": {"carol", "", "/pw3", ""},
		"quay.io":         {},
		"ghcr.io":         {},
		"127.0.0.1:5000":  {"bob", "pw2", "", ""},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("[username password passwordFile dockerConfig] (-want +got):\n%s", diff)
	}
	// A registry with credentials is served to authenticated clients only,
	// which needs client auth configured.
	cfg.Auth.Htpasswd = "/etc/berth/htpasswd"
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate after credential env: %v", err)
	}
}

func TestApplyCredentialEnvErrors(t *testing.T) {
	t.Parallel()
	cfg := mustDefault(t)
	cfg.SetRegistry(Registry{Name: "my-reg.test", Endpoints: []string{"https://a.test"}})
	cfg.SetRegistry(Registry{Name: "my.reg.test", Endpoints: []string{"https://b.test"}})
	err := ApplyCredentialEnv(cfg, []string{
		"BERTH_REGISTRY_NOWHERE_IO_PASSWORD=topsecret", "BERTH_REGISTRY_MY_REG_TEST_USERNAME=u",
	})
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"BERTH_REGISTRY_NOWHERE_IO_PASSWORD: no configured registry", "BERTH_REGISTRY_MY_REG_TEST_USERNAME: registries my-reg.test and my.reg.test"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("error %q shows a secret", err)
	}
}
