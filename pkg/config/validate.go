package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"
)

// FieldError is one invalid setting: its field path as written in the file
// (registries[1].endpoints[0], cache.lowWatermark) and what is wrong.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// problems collects FieldErrors.
type problems []error

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) check(path string, err error) {
	if err != nil {
		p.add(path, "%v", err)
	}
}

// Validate checks every setting and reports every problem it finds, joined
// (errors.Join), each a *FieldError naming the field path. It reads no files:
// a passwordFile or certFile that does not exist is found when it is used.
func (c *Config) Validate() error {
	var p problems
	c.validateListen(&p)
	c.validateAdmin(&p)
	c.validateCache(&p)
	checkDuration(&p, "tagTTL", c.TagTTL)
	checkDuration(&p, "fillTimeout", c.FillTimeout)
	checkDuration(&p, "shutdownGrace", c.ShutdownGrace)
	c.validateRegistries(&p)
	c.validatePins(&p)
	c.validateAuth(&p)
	c.validatePeers(&p)
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "%q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch strings.ToLower(c.Log.Format) {
	case "text", "json":
	default:
		p.add("log.format", "%q is not one of text, json", c.Log.Format)
	}
	c.validateLimits(&p)
	if c.Metrics.TopRepos < 0 {
		p.add("metrics.topRepos", "must not be negative, got %d", c.Metrics.TopRepos)
	}
	if c.Prefetch.Enabled && (c.Prefetch.Concurrency < 1 || c.Prefetch.Concurrency > 64) {
		p.add("prefetch.concurrency", "must be 1 to 64 when prefetch is enabled, got %d", c.Prefetch.Concurrency)
	}
	return errors.Join(p...)
}

func (c *Config) validateListen(p *problems) {
	tls := c.Listen.TLS
	if c.Listen.Addr == "" && tls.Addr == "" {
		p.add("listen.addr", "required (or listen.tls.addr)")
	}
	if c.Listen.Addr != "" {
		p.check("listen.addr", checkHostPort(c.Listen.Addr, false))
	}
	if tls.Addr != "" {
		p.check("listen.tls.addr", checkHostPort(tls.Addr, false))
		if tls.CertFile == "" {
			p.add("listen.tls.certFile", "required when listen.tls.addr is set")
		}
		if tls.KeyFile == "" {
			p.add("listen.tls.keyFile", "required when listen.tls.addr is set")
		}
		return
	}
	if tls.CertFile != "" || tls.KeyFile != "" {
		p.add("listen.tls.addr", "required when listen.tls.certFile or keyFile is set")
	}
}

func (c *Config) validateCache(p *problems) {
	if strings.TrimSpace(c.Cache.Dir) == "" {
		p.add("cache.dir", "required")
	}
	p.check("cache.maxSize", checkMaxSize(c.Cache.MaxSize))
	lo, hi := c.Cache.LowWatermark, c.Cache.HighWatermark
	if !(hi > 0 && hi <= 1) {
		p.add("cache.highWatermark", "must be more than 0 and at most 1, got %v", hi)
	}
	if !(lo > 0 && lo < 1) {
		p.add("cache.lowWatermark", "must be more than 0 and less than 1, got %v", lo)
	} else if lo >= hi {
		p.add("cache.lowWatermark", "must be less than cache.highWatermark (%v), got %v", hi, lo)
	}
	checkDuration(p, "cache.gcInterval", c.Cache.GCInterval)
	checkDuration(p, "cache.gcMinAge", c.Cache.GCMinAge)
}

func (c *Config) validateRegistries(p *problems) {
	if len(c.Registries) == 0 {
		p.add("registries", "at least one registry is required: berth serves only configured registries")
	}
	first := map[string]int{}
	for i, r := range c.Registries {
		path := fmt.Sprintf("registries[%d]", i)
		if j, dup := first[r.Name]; dup && r.Name != "" {
			p.add(path+".name", "%q is already the name of registries[%d]", r.Name, j)
		} else {
			first[r.Name] = i
		}
		r.validate(p, path)
	}
	if c.DefaultRegistry != "" && c.registry(c.DefaultRegistry) < 0 {
		p.add("defaultRegistry", "%q is not the name of a configured registry", c.DefaultRegistry)
	}
}

func (r *Registry) validate(p *problems, path string) {
	p.check(path+".name", CheckRegistryName(r.Name))
	if len(r.Endpoints) == 0 {
		p.add(path+".endpoints", "at least one endpoint URL is required")
	}
	for j, e := range r.Endpoints {
		p.check(fmt.Sprintf("%s.endpoints[%d]", path, j), CheckEndpoint(e))
	}
	switch {
	case r.Password != "" && r.PasswordFile != "":
		p.add(path+".passwordFile", "password and passwordFile are both set; set one")
	case r.Username == "" && (r.Password != "" || r.PasswordFile != ""):
		p.add(path+".username", "required when a password is set")
	case r.Username != "" && r.Password == "" && r.PasswordFile == "":
		p.add(path+".password", "username is set without password or passwordFile")
	}
	if r.DockerConfig != "" && r.Username != "" {
		p.add(path+".dockerConfig", "username and dockerConfig are both set; set one credential source")
	}
	if (r.CertFile == "") != (r.KeyFile == "") {
		p.add(path+".keyFile", "certFile and keyFile go together; set both or neither")
	}
	t := r.Timeouts
	checkDuration(p, path+".timeouts.connect", t.Connect)
	checkDuration(p, path+".timeouts.tlsHandshake", t.TLSHandshake)
	checkDuration(p, path+".timeouts.responseHeader", t.ResponseHeader)
	checkDuration(p, path+".timeouts.idleRead", t.IdleRead)
	checkDuration(p, path+".failBackoff", r.FailBackoff)
	checkDuration(p, path+".failBackoffMax", r.FailBackoffMax)
	checkDuration(p, path+".maxRetryAfter", r.MaxRetryAfter)
}

func (c *Config) validatePeers(p *problems) {
	pe := c.Peers
	if pe.Bind == "" {
		for _, f := range []struct {
			path string
			set  bool
		}{{"peers.advertise", pe.Advertise != ""}, {"peers.join", len(pe.Join) > 0}, {"peers.secretFile", pe.SecretFile != ""}} {
			if f.set {
				p.add(f.path, "set without peers.bind, which turns peers on")
			}
		}
	} else {
		p.check("peers.bind", checkHostPort(pe.Bind, false))
		switch {
		case pe.Advertise == "":
			p.add("peers.advertise", "required when peers.bind is set: the HTTP address peers reach this node at")
		default:
			p.check("peers.advertise", checkAdvertise(pe.Advertise))
		}
		if pe.SecretFile == "" {
			p.add("peers.secretFile", "required when peers.bind is set: it encrypts gossip and authenticates peer requests")
		}
	}
	for i, j := range pe.Join {
		p.check(fmt.Sprintf("peers.join[%d]", i), checkJoin(j))
	}
	checkDuration(p, "peers.timeout", pe.Timeout)
	checkDuration(p, "peers.idleTimeout", pe.IdleTimeout)
	checkDuration(p, "peers.rejoinInterval", pe.RejoinInterval)
	if pe.AskNext < 0 {
		p.add("peers.askNext", "must not be negative, got %d", pe.AskNext)
	}
	if pe.Fanout < 0 || pe.Fanout > 64 {
		p.add("peers.fanout", "must be 1 to 64 (0: the default, 4), got %d", pe.Fanout)
	}
	if _, err := StripeMin(pe.StripeSize); err != nil {
		p.add("peers.stripeSize", "%v", err)
	}
}

func checkDuration(p *problems, path string, d Duration) {
	if d < 0 {
		p.add(path, "must not be negative, got %s", d)
	}
}

// CheckEndpoint reports whether e is an upstream endpoint: an http or https
// URL with a host, without credentials, query or fragment.
func CheckEndpoint(e string) error {
	u, err := url.Parse(e)
	shown := redact(e)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", shown)
	case u.User != nil:
		return fmt.Errorf("%q: credentials in an endpoint URL: use username and password or passwordFile", shown)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: want an http:// or https:// URL", shown)
	case u.Host == "":
		return fmt.Errorf("%q: the URL has no host", shown)
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: an endpoint takes no query or fragment", shown)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: invalid port %q", shown, p)
		}
	}
	return nil
}

// redact hides the user information of a URL-like string, parsable or not.
func redact(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := strings.Index(s, "://") + 3
	if start < 3 || start > at {
		start = 0
	}
	return s[:start] + "xxxxx" + s[at:]
}

// validatePins checks each policy pin: a full reference to a tag of a
// configured registry, pinned to a valid digest.
func (c *Config) validatePins(p *problems) {
	if len(c.Registries) == 0 {
		return // reported already
	}
	for ref, d := range c.Pins {
		path := "pins[" + ref + "]"
		if _, _, _, err := c.ParsePin(ref, d); err != nil {
			p.add(path, "%v", err)
		}
	}
}

// ParsePin splits a policy pin "registry/name:tag" = digest into its
// parts, checking that the registry is configured and the digest valid.
func (c *Config) ParsePin(ref, d string) (registry, name, tag string, err error) {
	i := strings.LastIndexByte(ref, ':')
	slash := strings.IndexByte(ref, '/')
	if i < 0 || slash < 0 || i < slash || strings.Contains(ref[i:], "/") {
		return "", "", "", fmt.Errorf("%q is not registry/name:tag", ref)
	}
	registry, name, tag = ref[:slash], ref[slash+1:i], ref[i+1:]
	if c.registry(registry) < 0 {
		return "", "", "", fmt.Errorf("registry %q is not configured", registry)
	}
	if name == "" || tag == "" || !pinTag.MatchString(tag) {
		return "", "", "", fmt.Errorf("%q is not registry/name:tag", ref)
	}
	if !pinDigest.MatchString(d) {
		return "", "", "", fmt.Errorf("%q is not a sha256:<64 hex> digest", d)
	}
	return registry, name, tag, nil
}

var (
	pinTag    = regexp.MustCompile(`^` + reference.TagRegexp.String() + `$`) // distribution/reference's tag grammar, as pkg/oci's
	pinDigest = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
)

func (c *Config) validateLimits(p *problems) {
	for _, n := range []struct {
		path string
		v    int
	}{
		{"listen.maxConns", c.Listen.MaxConns},
		{"cache.auditMaxRepos", c.Cache.AuditMaxRepos},
		{"fetches.maxConcurrent", c.Fetches.MaxConcurrent},
		{"fetches.maxQueued", c.Fetches.MaxQueued},
	} {
		if n.v < 0 {
			p.add(n.path, "must not be negative, got %d", n.v)
		}
	}
	checkDuration(p, "listen.readHeaderTimeout", c.Listen.ReadHeaderTimeout)
	checkDuration(p, "listen.idleTimeout", c.Listen.IdleTimeout)
	checkDuration(p, "listen.writeTimeout", c.Listen.WriteTimeout)
	checkDuration(p, "fetches.notFoundTTL", c.Fetches.NotFoundTTL)
}
