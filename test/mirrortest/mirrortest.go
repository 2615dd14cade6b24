// Package mirrortest builds what the miss path's unit tests stand on: a
// real registry (upstreamtest), a store in a temp dir, and a real upstream
// client in front of the registry, all closed when the test ends.
package mirrortest

import (
	"net/http"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/upstream"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// Registry is the name the upstream client knows the registry by.
const Registry = "r.test"

// Parts are a store and an upstream client in front of Up.
type Parts struct {
	Up       *upstreamtest.Registry
	Store    *cache.Store
	Upstream *upstream.Client
	Repo     oci.Repo // team/app on Registry
}

// transport is used as it is by the upstream client (an *http.Transport
// would be cloned), so the test can close its idle connections.
type transport struct{ *http.Transport }

// New starts a registry and opens a store and an upstream client for it.
// The store closes when the test ends; whatever is built on it (a mirror)
// registers its own Close after New, so that it runs first. wrap, when
// given, makes the client's transport of the base one (a fault injector).
func New(t testing.TB, wrap ...func(*http.Transport) http.RoundTripper) *Parts {
	t.Helper()
	up := upstreamtest.New(t)
	store, err := cache.Open(t.TempDir(), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	var tr http.RoundTripper = transport{base}
	for _, w := range wrap {
		tr = w(base)
	}
	uc, err := upstream.New([]config.Registry{{Name: Registry, Endpoints: []string{up.URL}}}, upstream.Options{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	return &Parts{Up: up, Store: store, Upstream: uc, Repo: oci.Repo{Registry: Registry, Name: "team/app"}}
}
