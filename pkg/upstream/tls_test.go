package upstream

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func TestTLSCAFileAndInsecure(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	srv := httptest.NewTLSServer(up.handler)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		rc   config.Registry
		want error
	}{
		{"system roots only", config.Registry{}, oci.ErrUnavailable},
		{"ca file", config.Registry{CAFile: ca}, nil},
		{"insecure", config.Registry{Insecure: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.rc.Endpoints = []string{srv.URL}
			c := newClient(t, tc.rc)
			_, err := c.HeadManifest(ctx, repoOf(c, "team/app").Manifest("v1"))
			if (tc.want == nil && err != nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := New([]config.Registry{{Name: "x", CAFile: filepath.Join(t.TempDir(), "none")}}, Options{}); err == nil {
		t.Error("a missing CA file is no error")
	}
}

func TestHopsAndLoops(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	repo := repoOf(c, "team/app")
	at2 := repo.Manifest("v1")
	at2.Hops = 2
	if _, err := c.HeadManifest(testCtx(t), at2); err != nil {
		t.Fatal(err)
	}
	r := up.fault.requests("/manifests/")
	if len(r) != 1 || r[0].Header.Get(oci.HopHeader) != "3" {
		t.Fatalf("hop header of a request at 2 hops: %v", r)
	}
	if n, err := oci.ParseHops(r[0].Header); n != 3 || err != nil {
		t.Fatalf("Hops = %d, %v", n, err)
	}
	loop := repo.Manifest("v1")
	loop.Hops = oci.MaxHops
	if _, err := c.HeadManifest(context.Background(), loop); !errors.Is(err, oci.ErrUnavailable) {
		t.Fatalf("at MaxHops: %v", err)
	}
	if len(up.fault.requests("/manifests/")) != 1 {
		t.Fatal("a looping request went upstream")
	}
	if _, err := oci.ParseHops(http.Header{oci.HopHeader: {"x"}}); err == nil {
		t.Error("a bad hop count is no error")
	}
}
