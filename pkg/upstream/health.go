package upstream

import (
	"slices"
	"strings"
	"time"
)

// Health states of an endpoint and of a registry.
const (
	StateUnused   = "unused"   // never asked yet
	StateOK       = "ok"       // answering (endpoint); every endpoint answering (registry)
	StateFailing  = "failing"  // open circuit: not asked until a probe finds it answering (RetryAt)
	StateProbing  = "probing"  // open circuit, a probe under way
	StateDegraded = "degraded" // registry: some endpoints failing, others answering
	StateDown     = "down"     // registry: every endpoint failing; calls fail at once
	StateOffline  = "offline"  // registry: configured offline, never contacted
	StateLimited  = "rate-limited"
)

// EndpointHealth is one endpoint's circuit breaker as the status page
// shows it.
type EndpointHealth struct {
	URL   string `json:"url"`   // scheme://host[:port][/path]: never credentials or a query
	State string `json:"state"` // StateUnused, StateOK, StateFailing or StateProbing
	// LastSuccess is when it last answered (any status below 500 but 429)
	// or a probe found it answering; zero: never.
	LastSuccess time.Time `json:"lastSuccess"`
	LastError   string    `json:"lastError,omitempty"` // the last failure (connect error, timeout, 5xx, broken body)
	LastErrorAt time.Time `json:"lastErrorAt"`         // zero: never failed
	Failures    int       `json:"failures"`            // failures since it last answered
	// RetryAt is when its back-off ends and the next request probes it
	// (GET /v2/ in the background); zero while closed.
	RetryAt time.Time `json:"retryAt"`
	// Backoff is the length of the back-off under way ("" while closed):
	// failBackoff at first, doubled by each failed probe up to
	// failBackoffMax.
	Backoff string `json:"currentBackoff,omitempty"`
}

// RegistryHealth is a registry's endpoints and rate limit.
type RegistryHealth struct {
	Name  string `json:"name"`
	State string `json:"state"` // StateUnused, StateOK, StateDegraded, StateDown, StateLimited or StateOffline
	// Backoff is how long a failing endpoint is first left alone before a
	// probe (the registry's failBackoff); BackoffMax is how long at most,
	// after failed probes (failBackoffMax).
	Backoff    string `json:"backoff"`
	BackoffMax string `json:"backoffMax"`
	// RateLimitedUntil is when a 429's Retry-After ends; zero: not limited.
	RateLimitedUntil time.Time        `json:"rateLimitedUntil"`
	Endpoints        []EndpointHealth `json:"endpoints"`
}

// Health returns every registry's health, by name. It makes no request.
func (c *Client) Health() []RegistryHealth {
	now := time.Now()
	out := make([]RegistryHealth, 0, len(c.regs))
	for _, r := range c.regs {
		h := RegistryHealth{Name: r.name, Backoff: r.failBackoff.String(), BackoffMax: max(r.failBackoff, r.backoffMax).String()}
		r.limit.mu.Lock()
		if r.limit.until.After(now) {
			h.RateLimitedUntil = r.limit.until
		}
		r.limit.mu.Unlock()
		var ok, failing, unused int
		for _, ep := range r.endpoints {
			e := ep.health()
			switch e.State {
			case StateOK:
				ok++
			case StateUnused:
				unused++
			default:
				failing++
			}
			h.Endpoints = append(h.Endpoints, e)
		}
		switch {
		case r.offline:
			h.State = StateOffline
		case failing == len(r.endpoints):
			h.State = StateDown
		case failing > 0:
			h.State = StateDegraded
		case !h.RateLimitedUntil.IsZero():
			h.State = StateLimited
		case unused == len(r.endpoints):
			h.State = StateUnused
		default:
			h.State = StateOK
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b RegistryHealth) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func (ep *endpoint) health() EndpointHealth {
	u := *ep.url
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	ep.mu.Lock()
	defer ep.mu.Unlock()
	h := EndpointHealth{URL: u.String(), LastSuccess: ep.lastOK, LastError: ep.lastErr, LastErrorAt: ep.lastErrAt, Failures: ep.failures, RetryAt: ep.failedUntil}
	if ep.current > 0 {
		h.Backoff = ep.current.String()
	}
	switch {
	case ep.probing:
		h.State = StateProbing
	case !ep.failedUntil.IsZero():
		h.State = StateFailing
	case ep.lastOK.IsZero() && ep.lastErrAt.IsZero():
		h.State = StateUnused
	default:
		h.State = StateOK
	}
	return h
}
