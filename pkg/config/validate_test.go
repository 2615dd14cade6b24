package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fieldPaths returns the Path of every FieldError joined in err.
func fieldPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate error %T is not joined", err)
	}
	var paths []string
	for _, e := range j.Unwrap() {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %q is not a *FieldError", e)
		}
		if !strings.HasPrefix(e.Error(), fe.Path+": ") {
			t.Errorf("error %q does not begin with its path", e)
		}
		paths = append(paths, fe.Path)
	}
	return paths
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		edit  func(*Config)
		paths []string // nil: valid
	}{
		{"full file as is", func(*Config) {}, nil},
		{"listen on port 0, all interfaces", func(c *Config) { c.Listen.Addr = ":0" }, nil},
		{"listen addr without port", func(c *Config) { c.Listen.Addr = "127.0.0.1" }, []string{"listen.addr"}},
		{"listen addr bad port", func(c *Config) { c.Listen.Addr = "127.0.0.1:http" }, []string{"listen.addr"}},
		{"no listener at all", func(c *Config) { c.Listen.Addr, c.Listen.TLS = "", TLS{} }, []string{"listen.addr"}},
		{"only TLS listener", func(c *Config) { c.Listen.Addr = "" }, nil},
		{"tls without key", func(c *Config) { c.Listen.TLS.KeyFile = "" }, []string{"listen.tls.keyFile"}},
		{"tls without cert and key", func(c *Config) { c.Listen.TLS.CertFile, c.Listen.TLS.KeyFile = "", "" }, []string{"listen.tls.certFile", "listen.tls.keyFile"}},
		{"tls cert without addr", func(c *Config) { c.Listen.TLS.Addr = "" }, []string{"listen.tls.addr"}},
		{"no cache dir", func(c *Config) { c.Cache.Dir = " " }, []string{"cache.dir"}},
		{"max size bytes", func(c *Config) { c.Cache.MaxSize = "1073741824" }, nil},
		{"max size no quota", func(c *Config) { c.Cache.MaxSize = "" }, nil},
		{"max size bad unit", func(c *Config) { c.Cache.MaxSize = "50GB!" }, []string{"cache.maxSize"}},
		{"max size bad percent", func(c *Config) { c.Cache.MaxSize = "120%" }, []string{"cache.maxSize"}},
		{"max size zero", func(c *Config) { c.Cache.MaxSize = "0" }, []string{"cache.maxSize"}},
		{"low above high", func(c *Config) { c.Cache.LowWatermark, c.Cache.HighWatermark = 0.9, 0.8 }, []string{"cache.lowWatermark"}},
		{"low equals high", func(c *Config) { c.Cache.LowWatermark, c.Cache.HighWatermark = 0.8, 0.8 }, []string{"cache.lowWatermark"}},
		{"low zero", func(c *Config) { c.Cache.LowWatermark = 0 }, []string{"cache.lowWatermark"}},
		{"high above one", func(c *Config) { c.Cache.HighWatermark = 1.5 }, []string{"cache.highWatermark"}},
		{"high exactly one", func(c *Config) { c.Cache.HighWatermark = 1 }, nil},
		{"negative durations", func(c *Config) {
			c.TagTTL, c.FillTimeout, c.ShutdownGrace, c.Cache.GCInterval = -1, -1, -1, -1
			c.Peers.Timeout, c.Peers.RejoinInterval = -1, -1
			c.Registries[0].Timeouts = Timeouts{-1, -1, -1, -1}
			c.Registries[0].FailBackoff, c.Registries[0].MaxRetryAfter = -1, -1
		}, []string{
			"cache.gcInterval", "tagTTL", "fillTimeout", "shutdownGrace",
			"registries[0].timeouts.connect", "registries[0].timeouts.tlsHandshake", "registries[0].timeouts.responseHeader",
			"registries[0].timeouts.idleRead", "registries[0].failBackoff", "registries[0].maxRetryAfter",
			"peers.timeout", "peers.rejoinInterval",
		}},
		{"zero durations", func(c *Config) { c.TagTTL, c.Cache.GCInterval, c.Peers.RejoinInterval = 0, 0, 0 }, nil},
		{"no registries", func(c *Config) { c.Registries, c.DefaultRegistry = nil, "" }, []string{"registries"}},
		{"duplicate registry", func(c *Config) { c.Registries[2].Name = c.Registries[0].Name }, []string{"registries[2].name"}},
		{"registry without name", func(c *Config) { c.Registries[1].Name = "" }, []string{"registries[1].name"}},
		{"registry name a URL", func(c *Config) { c.Registries[1].Name = "https://quay.io" }, []string{"registries[1].name"}},
		{"registry name upper case", func(c *Config) { c.Registries[1].Name = "Quay.io" }, []string{"registries[1].name"}},
		{"registry name with path", func(c *Config) { c.Registries[1].Name = "quay.io/org" }, []string{"registries[1].name"}},
		{"registry name bad port", func(c *Config) { c.Registries[1].Name = "localhost:99999" }, []string{"registries[1].name"}},
		{"registry name ipv6", func(c *Config) { c.Registries[1].Name = "[::1]:5000" }, nil},
		{"registry name localhost", func(c *Config) { c.Registries[1].Name = "localhost" }, nil},
		{"registry without endpoints", func(c *Config) { c.Registries[2].Endpoints = nil }, []string{"registries[2].endpoints"}},
		{"bad endpoints", func(c *Config) {
			c.Registries[0].Endpoints = []string{"https://ok.test", "ftp://x.test", "https://user:pw@x.test", "https://x.test?a=b", "registry.test", "http://x.test:0"}
		}, []string{"registries[0].endpoints[1]", "registries[0].endpoints[2]", "registries[0].endpoints[3]", "registries[0].endpoints[4]", "registries[0].endpoints[5]"}},
		{"default registry unknown", func(c *Config) { c.DefaultRegistry = "quay.io" }, []string{"defaultRegistry"}},
		{"default registry empty", func(c *Config) { c.DefaultRegistry = "" }, nil},
		{"password and passwordFile", func(c *Config) { c.Registries[0].Password = "x" }, []string{"registries[0].passwordFile"}},
		{"password without username", func(c *Config) { c.Registries[1].Username = "" }, []string{"registries[1].username"}},
		{"username without password", func(c *Config) { c.Registries[1].Password = "" }, []string{"registries[1].password"}},
		{"username and dockerConfig", func(c *Config) { c.Registries[2].Username, c.Registries[2].Password = "u", "p" }, []string{"registries[2].dockerConfig"}},
		{"client cert without key", func(c *Config) { c.Registries[0].KeyFile = "" }, []string{"registries[0].keyFile"}},
		{"peers off", func(c *Config) { c.Peers.Bind, c.Peers.Advertise, c.Peers.Join, c.Peers.SecretFile = "", "", nil, "" }, nil},
		{"peer settings without bind", func(c *Config) { c.Peers.Bind = "" }, []string{"peers.advertise", "peers.join", "peers.secretFile"}},
		{"bind without advertise and secret", func(c *Config) { c.Peers.Advertise, c.Peers.SecretFile = "", "" }, []string{"peers.advertise", "peers.secretFile"}},
		{"bind not host:port", func(c *Config) { c.Peers.Bind = "7946" }, []string{"peers.bind"}},
		{"advertise unspecified", func(c *Config) { c.Peers.Advertise = "0.0.0.0:5000" }, []string{"peers.advertise"}},
		{"advertise without host", func(c *Config) { c.Peers.Advertise = ":5000" }, []string{"peers.advertise"}},
		{"advertise port 0", func(c *Config) { c.Peers.Advertise = "10.0.0.1:0" }, []string{"peers.advertise"}},
		{"bad join", func(c *Config) { c.Peers.Join = []string{"ok.test", "http://x.test", "a b", "x.test:port"} }, []string{"peers.join[1]", "peers.join[2]", "peers.join[3]"}},
		{"negative askNext", func(c *Config) { c.Peers.AskNext = -1 }, []string{"peers.askNext"}},
		{"negative fanout", func(c *Config) { c.Peers.Fanout = -1 }, []string{"peers.fanout"}},
		{"huge fanout", func(c *Config) { c.Peers.Fanout = 65 }, []string{"peers.fanout"}},
		{"log level", func(c *Config) { c.Log.Level = "verbose" }, []string{"log.level"}},
		{"log level upper case", func(c *Config) { c.Log.Level = "WARN" }, nil},
		{"log format", func(c *Config) { c.Log.Format = "logfmt" }, []string{"log.format"}},
		{"negative topRepos", func(c *Config) { c.Metrics.TopRepos = -5 }, []string{"metrics.topRepos"}},
		{"prefetch concurrency 0", func(c *Config) { c.Prefetch.Enabled, c.Prefetch.Concurrency = true, 0 }, []string{"prefetch.concurrency"}},
		{"prefetch concurrency too high", func(c *Config) { c.Prefetch.Concurrency = 1000 }, []string{"prefetch.concurrency"}},
		{"admin off", func(c *Config) { c.Admin.Addr = "" }, nil},
		{"admin not host:port", func(c *Config) { c.Admin.Addr = "5001" }, []string{"admin.addr"}},
		{"admin on the listen address", func(c *Config) { c.Admin.Addr = c.Listen.Addr }, []string{"admin.addr"}},
		{"credentials without client auth", func(c *Config) { c.Auth.Htpasswd, c.Auth.Tokens = "", "" }, []string{
			// [0] says authenticated; [2] has credentials and says nothing; [1] says anonymous.
			"registries[0].access", "registries[2].access",
		}},
		{"credentials, tokens only", func(c *Config) { c.Auth.Htpasswd = "" }, nil},
		{"credentials served anonymously on purpose", func(c *Config) {
			c.Auth = Auth{}
			c.Registries[0].Access, c.Registries[0].Users, c.Registries[0].Groups = "anonymous", nil, nil
			c.Registries[0].Rules = []AccessRule{{Repos: []string{"x/**"}, Access: "deny"}}
			c.Registries[2].Access = "ANONYMOUS"
		}, nil},
		{"an authenticated rule without client auth", func(c *Config) {
			c.Auth = Auth{}
			c.Registries[1].Rules = []AccessRule{{Repos: []string{"x"}, Access: "authenticated"}}
			c.Registries[0].Access, c.Registries[0].Users, c.Registries[0].Groups, c.Registries[0].Rules = "anonymous", nil, nil, nil
			c.Registries[2].Access = "deny"
		}, []string{"registries[1].access"}},
		{"bad access values", func(c *Config) {
			c.Registries[1].Access = "public"
			c.Registries[0].Rules[1].Access = ""
			c.Registries[0].Rules[2].Access = "private"
		}, []string{"registries[0].rules[1].access", "registries[0].rules[2].access", "registries[1].access"}},
		{"users with anonymous", func(c *Config) { c.Registries[1].Users = []string{"alice"} }, []string{"registries[1].users"}},
		{"users with deny rule", func(c *Config) { c.Registries[0].Rules[2].Groups = []string{"team-a"} }, []string{"registries[0].rules[2].users"}},
		{"unknown group and bad user", func(c *Config) {
			c.Registries[0].Groups = []string{"team-b"}
			c.Registries[0].Rules[1].Users = []string{"bob:x"}
		}, []string{"registries[0].groups[0]", "registries[0].rules[1].users[0]"}},
		{"bad rule repos", func(c *Config) {
			c.Registries[0].Rules[0].Repos = []string{"ok/*", "", "bad/[x"}
			c.Registries[0].Rules[1].Repos = nil
		}, []string{"registries[0].rules[0].repos[1]", "registries[0].rules[0].repos[2]", "registries[0].rules[1].repos"}},
		{"bad group member and realm", func(c *Config) {
			c.Auth.Groups["team-a"] = []string{"alice", ""}
			c.Auth.Realm = `a"b`
		}, []string{"auth.realm", "auth.groups.team-a[1]"}},
		{"negative limits", func(c *Config) {
			c.Listen.MaxConns, c.Cache.AuditMaxRepos, c.Fetches.MaxConcurrent, c.Fetches.MaxQueued = -1, -1, -1, -1
			c.Listen.WriteTimeout, c.Fetches.NotFoundTTL = -1, -1
		}, []string{"listen.maxConns", "cache.auditMaxRepos", "fetches.maxConcurrent", "fetches.maxQueued", "listen.writeTimeout", "fetches.notFoundTTL"}},
		{"many at once", func(c *Config) {
			c.Listen.Addr = "nope"
			c.Registries[1].Endpoints[0] = "quay.io"
			c.Cache.LowWatermark = 2
			c.Log.Format = "xml"
		}, []string{"listen.addr", "cache.lowWatermark", "registries[1].endpoints[0]", "log.format"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Load(filepath.Join("testdata", "full.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			tt.edit(cfg)
			err = cfg.Validate()
			if diff := cmp.Diff(tt.paths, fieldPaths(t, err)); diff != "" {
				t.Errorf("paths of %v (-want +got):\n%s", err, diff)
			}
		})
	}
}

func TestValidateKeepsSecretsOut(t *testing.T) {
	t.Parallel()
	cfg, err := Load(filepath.Join("testdata", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registries[1].Endpoints = []string{"https://admin:s3cr3t-pw@x.test", "https://admin:s3cr3t-pw @x.test", "admin:s3cr3t-pw@x.test"}
	cfg.Registries[1].Username = ""
	err = cfg.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, secret := range []string{"s3cr3t-pw", "hunter2"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows a secret", err)
		}
	}
}

func TestOneHostGrammar(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 251) + ".io" // 254 characters
	tests := []struct {
		name       string
		registry   bool // CheckRegistryName takes it
		listenHost bool // checkHostPort takes it as the host of host:1
	}{
		{"docker.io", true, true},
		{"registry-1.docker.io", true, true},
		{"127.0.0.1", true, true},
		{"localhost", true, true},
		{"Docker.IO", false, true}, // DNS ignores case, routing by name does not
		{"node-1.Cluster.local.", false, true},
		{"-x.io", false, false},
		{"x-.io", false, false},
		{"a..b", false, false},
		{"a_b.io", false, false},
		{long, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := CheckRegistryName(tt.name); (err == nil) != tt.registry {
				t.Errorf("CheckRegistryName(%q) = %v, want ok=%v", tt.name, err, tt.registry)
			}
			if err := checkHostPort(tt.name+":1", true); (err == nil) != tt.listenHost {
				t.Errorf("checkHostPort(%q) = %v, want ok=%v", tt.name+":1", err, tt.listenHost)
			}
		})
	}
	for name, ok := range map[string]bool{
		"127.0.0.1:5000": true, "[::1]:5000": true, "[::1]": false, "x:": false, "x:0": false,
		"x:65536": false, "docker.io/library": false, "a/b": false, "..": false, "": false,
	} {
		if err := CheckRegistryName(name); (err == nil) != ok {
			t.Errorf("CheckRegistryName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}
