package server

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/berth-registry/berth/pkg/version"
)

// The status page: GET /ui/ on the admin listener, server-rendered from
// the same value GET /ui/api/status returns as JSON. Everything it needs is
// embedded (no external assets), so it works air-gapped.

//go:embed ui/status.html ui/app.js
var uiFiles embed.FS

var uiTemplate = template.Must(template.New("status.html").Funcs(template.FuncMap{
	"bytes": humanBytes,
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"short": func(s fmt.Stringer) string { v := s.String(); return v[:min(len(v), 19)] },
	"pct":   func(f float64) string { return fmt.Sprintf("%.1f%%", 100*f) },
	"until": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		if d := time.Until(t); d > 0 {
			return "in " + d.Round(time.Second).String()
		}
		return "due"
	},
}).ParseFS(uiFiles, "ui/status.html"))

// Status is what the status page shows; GET /ui/api/status returns it.
type Status struct {
	Version    version.Info              `json:"version"`
	Node       string                    `json:"node"`             // this node's cluster name; "" alone
	Peers      map[string]string         `json:"peers"`            // live members besides this node: name -> HTTP address
	Store      StoreStatus               `json:"store"`            // what the store holds
	LastMirror time.Time                 `json:"lastMirror"`       // when a client last got a manifest or blob; zero: never
	Hits       map[string]float64        `json:"hits"`             // answered from the store, by kind
	Misses     map[string]float64        `json:"misses"`           // not in the store, by kind
	HitRatio   float64                   `json:"hitRatio"`         // hits / (hits + misses), 0 before any request
	Served     map[string]float64        `json:"servedBytes"`      // bytes sent to clients, by source
	Fills      []cache.FillInfo          `json:"fills"`            // fills under way
	Upstreams  []upstream.RegistryHealth `json:"upstreams"`        // each registry's endpoints: state, last error, back-off, last success
	Images     []cache.AuditRepo         `json:"images"`           // every repository served: tags, digests, pulls
	Config     ConfigSummary             `json:"config"`           // no secrets
	History    []Sample                  `json:"history"`          // one sample a minute, the last hour
	Generated  time.Time                 `json:"generated"`        // when this status was made
	Errors     []string                  `json:"errors,omitempty"` // parts that could not be read
}

// StoreStatus is the store's size.
type StoreStatus struct {
	Bytes int64 `json:"bytes"`
	Blobs int64 `json:"blobs"`
	Quota int64 `json:"quota"` // 0: none
}

// ConfigSummary is the part of the configuration an operator checks; it
// never holds a credential.
type ConfigSummary struct {
	Registries      []string `json:"registries"`
	DefaultRegistry string   `json:"defaultRegistry"`
	CacheDir        string   `json:"cacheDir"`
	MaxSize         string   `json:"maxSize"`
	TagTTL          string   `json:"tagTTL"`
	PeersBind       string   `json:"peersBind"`
}

// Sample is one point of the history chart.
type Sample struct {
	Time   time.Time `json:"time"`
	Hits   float64   `json:"hits"`   // cumulative
	Misses float64   `json:"misses"` // cumulative
}

// history keeps the last hour of samples, taken when the page is asked for
// (at most one a minute): no goroutine runs for a page nobody opens.
type history struct {
	mu      sync.Mutex
	samples []Sample
}

func (h *history) add(s Sample) []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n == 0 || s.Time.Sub(h.samples[n-1].Time) >= time.Minute {
		h.samples = append(h.samples, s)
	} else {
		h.samples[n-1].Hits, h.samples[n-1].Misses = s.Hits, s.Misses
	}
	for len(h.samples) > 0 && s.Time.Sub(h.samples[0].Time) > time.Hour {
		h.samples = h.samples[1:]
	}
	return slices.Clone(h.samples)
}

// status gathers the page's data.
func (s *Server) status() Status {
	now := time.Now()
	st := Status{Version: version.Get(), Node: s.NodeName(), Peers: s.cluster.Members(), LastMirror: s.metrics.LastMirrored(),
		Hits: map[string]float64{}, Misses: map[string]float64{}, Served: map[string]float64{}, Fills: s.store.Fills(), Upstreams: s.up.Health(), Generated: now}
	st.Store.Bytes, st.Store.Blobs = s.store.Usage()
	st.Store.Quota, _ = storeQuota(s.cfg.Cache)
	if mfs, err := s.reg.Gather(); err == nil {
		for _, mf := range mfs {
			into := map[string]map[string]float64{"berth_cache_hits_total": st.Hits, "berth_cache_misses_total": st.Misses, "berth_served_bytes_total": st.Served}[mf.GetName()]
			if into == nil {
				continue
			}
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "kind" || l.GetName() == "source" {
						into[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		}
	} else {
		st.Errors = append(st.Errors, "metrics: "+err.Error())
	}
	var hits, misses float64
	for _, v := range st.Hits {
		hits += v
	}
	for _, v := range st.Misses {
		misses += v
	}
	if hits+misses > 0 {
		st.HitRatio = hits / (hits + misses)
	}
	st.History = s.hist.add(Sample{Time: now, Hits: hits, Misses: misses})
	if repos, err := s.store.Audit(); err == nil {
		st.Images = repos
	} else {
		st.Errors = append(st.Errors, "store: "+err.Error())
	}
	c := s.cfg
	st.Config = ConfigSummary{DefaultRegistry: c.DefaultRegistry, CacheDir: c.Cache.Dir, MaxSize: c.Cache.MaxSize, TagTTL: c.TagTTL.D().String(), PeersBind: c.Peers.Bind}
	for _, r := range c.Registries {
		st.Config.Registries = append(st.Config.Registries, r.Name)
	}
	return st
}

func (s *Server) uiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:")
		if err := uiTemplate.Execute(w, uiPage{Status: s.status()}); err != nil {
			s.log.Warn("status page", "err", err)
		}
	})
	mux.HandleFunc("GET /ui/app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		http.ServeFileFS(w, r, uiFiles, "ui/app.js")
	})
	mux.HandleFunc("GET /ui/api/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.status())
	})
}

// uiPage is the template's data: the status and the chart drawn from it.
type uiPage struct{ Status }

// UpstreamSummary counts the registries by state, worst first: "1 down,
// 1 degraded, 2 ok".
func (p uiPage) UpstreamSummary() string {
	n := map[string]int{}
	for _, r := range p.Upstreams {
		n[r.State]++
	}
	var parts []string
	for _, st := range []string{upstream.StateDown, upstream.StateDegraded, upstream.StateLimited, upstream.StateOK, upstream.StateUnused, upstream.StateOffline} {
		if n[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Chart is the hit ratio of each interval of the history as an SVG
// polyline's points, 600x120.
func (p uiPage) Chart() string {
	h := p.History
	if len(h) < 2 {
		return ""
	}
	var b strings.Builder
	span := h[len(h)-1].Time.Sub(h[0].Time).Seconds()
	for i := 1; i < len(h); i++ {
		dh, dm := h[i].Hits-h[i-1].Hits, h[i].Misses-h[i-1].Misses
		ratio := 0.0
		if dh+dm > 0 {
			ratio = dh / (dh + dm)
		}
		x := 600 * h[i].Time.Sub(h[0].Time).Seconds() / span
		fmt.Fprintf(&b, "%.0f,%.0f ", x, 120-110*ratio)
	}
	return strings.TrimSpace(b.String())
}

func humanBytes(n any) string {
	var v float64
	switch x := n.(type) {
	case int64:
		v = float64(x)
	case float64:
		v = x
	case int:
		v = float64(x)
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}
