// Package config is berth's configuration: the YAML file, its embedded
// default, and validation. Only cmd/berth reads files, flags and env; every
// other package receives the values it needs.
package config

import "time"

// Config is the whole configuration file.
type Config struct {
	Listen          Listen     `yaml:"listen"`
	Admin           Admin      `yaml:"admin"`
	Auth            Auth       `yaml:"auth"`
	Cache           Cache      `yaml:"cache"`
	TagTTL          Duration   `yaml:"tagTTL"`          // how long a tag's digest is trusted without asking upstream
	FillTimeout     Duration   `yaml:"fillTimeout"`     // bound on one blob fetch
	DefaultRegistry string     `yaml:"defaultRegistry"` // registry of requests that name none
	Registries      []Registry `yaml:"registries"`
	Peers           Peers      `yaml:"peers"`
	Fetches         Fetches    `yaml:"fetches"`
	Log             Log        `yaml:"log"`
	Metrics         Metrics    `yaml:"metrics"`
	Prefetch        Prefetch   `yaml:"prefetch"`
	ShutdownGrace   Duration   `yaml:"shutdownGrace"` // how long in-flight responses and fills may finish on SIGTERM
	// Offline makes berth contact no upstream at all: tags resolve from the
	// store, and what it lacks is a miss (MANIFEST_UNKNOWN, BLOB_UNKNOWN).
	Offline bool `yaml:"offline"`
	// Pins are policy pins: "registry/name:tag" → "sha256:...". berth
	// serves that tag only as that digest, whatever the upstream says.
	Pins map[string]string `yaml:"pins"`
}

// Listen holds the serving addresses.
type Listen struct {
	Addr string `yaml:"addr"` // plain HTTP, for node-local containerd
	TLS  TLS    `yaml:"tls"`
	// MaxConns bounds the client connections open at once, over both
	// listeners; 0 means no bound.
	MaxConns          int      `yaml:"maxConns"`
	ReadHeaderTimeout Duration `yaml:"readHeaderTimeout"` // time a client has to send a request's headers
	IdleTimeout       Duration `yaml:"idleTimeout"`       // how long a keep-alive connection may wait for its next request
	// WriteTimeout is the longest a response may go without the client
	// taking a byte; a slow download that keeps moving is never cut.
	WriteTimeout Duration `yaml:"writeTimeout"`
}

// TLS is an optional HTTPS listener beside the plain one.
type TLS struct {
	Addr     string `yaml:"addr"`
	CertFile string `yaml:"certFile"`
	KeyFile  string `yaml:"keyFile"`
}

// Cache is the content store.
type Cache struct {
	Dir           string   `yaml:"dir"`
	MaxSize       string   `yaml:"maxSize"`       // "50GiB", "80%" of the filesystem, or "" for no quota
	HighWatermark float64  `yaml:"highWatermark"` // fraction of MaxSize that starts eviction
	LowWatermark  float64  `yaml:"lowWatermark"`  // fraction of MaxSize eviction stops at
	GCInterval    Duration `yaml:"gcInterval"`    // period of the background gc; 0 disables it
	GCMinAge      Duration `yaml:"gcMinAge"`      // unreferenced content unused this long is removed by gc
	// AuditMaxRepos bounds the repositories the audit record keeps; past
	// it the least served are dropped. 0 means no bound.
	AuditMaxRepos int `yaml:"auditMaxRepos"`
}

// Fetches bounds what clients can make berth ask of its upstreams.
type Fetches struct {
	MaxConcurrent int      `yaml:"maxConcurrent"` // upstream requests at once (a body counts until read); 0 means no bound
	MaxQueued     int      `yaml:"maxQueued"`     // requests waiting for one of those; past it a client gets 429
	NotFoundTTL   Duration `yaml:"notFoundTTL"`   // how long an upstream's "not found" answers again without asking; 0 disables
}

// Registry is one upstream registry, reachable under its Name.
type Registry struct {
	Name         string   `yaml:"name"`      // as clients write it: docker.io, 127.0.0.1:5000
	Endpoints    []string `yaml:"endpoints"` // URLs tried in order, with failover
	Username     string   `yaml:"username,omitempty"`
	Password     string   `yaml:"password,omitempty"`
	PasswordFile string   `yaml:"passwordFile,omitempty"`
	DockerConfig string   `yaml:"dockerConfig,omitempty"` // a Docker config.json to take credentials from
	CAFile       string   `yaml:"caFile,omitempty"`
	CertFile     string   `yaml:"certFile,omitempty"` // client certificate
	KeyFile      string   `yaml:"keyFile,omitempty"`
	Insecure     bool     `yaml:"insecure,omitempty"` // skip TLS verification (lab registries)
	Timeouts     Timeouts `yaml:"timeouts,omitempty"` // zero fields mean pkg/upstream's defaults
	// FailBackoff is how long a failing endpoint is first skipped; each
	// failed probe doubles it (with jitter) up to FailBackoffMax. 0 means
	// pkg/upstream's default.
	FailBackoff Duration `yaml:"failBackoff,omitempty"`
	// FailBackoffMax caps the back-off of an endpoint that keeps failing;
	// 0 means pkg/upstream's default, a value at or below FailBackoff a flat
	// back-off.
	FailBackoffMax Duration `yaml:"failBackoffMax,omitempty"`
	// MaxRetryAfter bounds how long a 429's Retry-After is waited out; 0 means pkg/upstream's default.
	MaxRetryAfter Duration `yaml:"maxRetryAfter,omitempty"`
	// Access is who may read this registry through berth: anonymous,
	// authenticated or deny; "" means anonymous, or authenticated when the
	// registry has credentials (EffectiveAccess).
	Access string `yaml:"access,omitempty"`
	// Users and Groups narrow authenticated access to these clients; empty
	// means any authenticated client.
	Users  []string `yaml:"users,omitempty"`
	Groups []string `yaml:"groups,omitempty"`
	// Rules decide per repository, first match wins; a repository no rule
	// matches takes the registry's Access.
	Rules []AccessRule `yaml:"rules,omitempty"`
	// AllowPrivateRedirects lets the registry's redirects lead to loopback,
	// private, link-local and metadata addresses (object storage on a
	// private network, tests on loopback). Off, such a redirect is refused.
	AllowPrivateRedirects bool `yaml:"allowPrivateRedirects,omitempty"`
	// Offline: berth never contacts this registry (see Config.Offline).
	Offline bool `yaml:"offline,omitempty"`
}

// AccessRule is who may read the repositories matching Repos.
type AccessRule struct {
	Repos  []string `yaml:"repos"`  // globs over the repository name: * within a path segment, ** across segments
	Access string   `yaml:"access"` // anonymous, authenticated or deny
	Users  []string `yaml:"users,omitempty"`
	Groups []string `yaml:"groups,omitempty"`
}

// Admin is the listener of the operator's surfaces: /metrics, /debug/*
// (pprof, the audit record) and the admin API.
type Admin struct {
	Addr string `yaml:"addr"` // host:port; "" turns the admin listener off
}

// Auth is how clients prove who they are to berth. Either file may be
// unset; with neither, no client can authenticate and only anonymous
// access works.
type Auth struct {
	Htpasswd string              `yaml:"htpasswd"` // htpasswd file of bcrypt users (HTTP basic); re-read on SIGHUP
	Tokens   string              `yaml:"tokens"`   // file of "name:sha256:<hex>" bearer tokens; re-read on SIGHUP
	Realm    string              `yaml:"realm"`    // realm of the WWW-Authenticate challenge
	Groups   map[string][]string `yaml:"groups"`   // group name -> members (htpasswd users and token names)
}

// Timeouts bound each phase of an upstream request. None bounds a whole
// body: a slow large layer that is still moving is never cut.
type Timeouts struct {
	Connect        Duration `yaml:"connect"`
	TLSHandshake   Duration `yaml:"tlsHandshake"`
	ResponseHeader Duration `yaml:"responseHeader"`
	IdleRead       Duration `yaml:"idleRead"` // longest pause between body bytes
}

// Peers configures the cluster. An empty Bind runs the node alone.
type Peers struct {
	Bind        string   `yaml:"bind"`        // gossip address, host:port
	Advertise   string   `yaml:"advertise"`   // HTTP address peers reach this node at
	Join        []string `yaml:"join"`        // seed addresses or DNS names, re-resolved
	SecretFile  string   `yaml:"secretFile"`  // gossip key; also signs peer HTTP requests
	Timeout     Duration `yaml:"timeout"`     // time to first byte from a peer
	IdleTimeout Duration `yaml:"idleTimeout"` // longest pause in a peer's body before it is abandoned
	AskNext     int      `yaml:"askNext"`     // ranked nodes asked in holder mode when the relay plan says upstream
	Fanout      int      `yaml:"fanout"`      // children per node in a blob's relay tree; a node serves at most twice this many copies of a blob
	// StripeSize is the smallest stripe: a blob of at least twice this
	// size is fetched as stripes (byte ranges), each down its own relay
	// tree; "off" fetches every blob in one stream.
	StripeSize string `yaml:"stripeSize"`
	// NodeName names this node in the cluster; "" means the hostname and a
	// random id kept in the cache directory (file node-id).
	NodeName string `yaml:"nodeName"`
	// RejoinInterval is how often Join is re-resolved and re-joined, so a
	// headless Service's new pods are found; 0 disables it.
	RejoinInterval Duration `yaml:"rejoinInterval"`
	// ResolveTags lets a tag's owner in the cluster resolve it for this
	// node (one upstream HEAD per tag per TTL for the whole cluster): a
	// member holding the secret is trusted to say which digest a tag names.
	// Off, this node revalidates every tag upstream itself.
	ResolveTags bool `yaml:"resolveTags"`
	// AllowForeignAdvertise accepts a member whose advertised HTTP address
	// is on another host than the address its gossip comes from (NAT, a
	// separate serving interface). Off, such a member is not used.
	AllowForeignAdvertise bool `yaml:"allowForeignAdvertise"`
}

// Log configures log/slog.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Metrics configures /metrics.
type Metrics struct {
	TopRepos int `yaml:"topRepos"` // repositories with their own pull counter; the rest count as "other"
}

// Prefetch configures layer prefetch: the config and layers of an image
// manifest fetched cold for a client are fetched at once in the background.
type Prefetch struct {
	Enabled     bool `yaml:"enabled"`     // prefetch at all
	Concurrency int  `yaml:"concurrency"` // blobs prefetched at once per node
}

// Duration is a time.Duration written as "60s" in YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }
