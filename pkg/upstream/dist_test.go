package upstream

import (
	"context"
	"github.com/berth-registry/berth/pkg/config"
	"io"
	"net/http"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// distribution returns distribution v3's registry, in process, storing in
// memory: unlike go-containerregistry's, it answers open-ended Range
// requests with 206, as real registries do.
func distribution(t *testing.T) http.Handler {
	t.Helper()
	cfg := &configuration.Configuration{Storage: configuration.Storage{"inmemory": configuration.Parameters{},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}}}} // its goroutine never ends
	cfg.Log.Level = "error"
	cfg.Log.AccessLog.Disabled = true
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return handlers.NewApp(ctx, cfg)
}

func newDistUpstream(t *testing.T) *upstreamReg {
	t.Helper()
	u := &upstreamReg{handler: distribution(t)}
	u.start(t)
	return u
}

func TestDistributionRange(t *testing.T) {
	up := newDistUpstream(t)
	img := up.push(t, "team/app", "v1", 1000)
	d, layer := layerOf(t, img)
	c := newClient(t, configRegistry(up.front.URL))
	rc, size, err := c.FetchBlob(testCtx(t), repoOf(c, "team/app").Blob(d), 10)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if size != int64(len(layer)) || string(b) != string(layer[10:]) || up.fault.blobBytes.Load() != int64(len(layer)-10) {
		t.Fatalf("size %d, %d bytes, upstream wrote %d", size, len(b), up.fault.blobBytes.Load())
	}
}
func configRegistry(urls ...string) config.Registry { return config.Registry{Endpoints: urls} }
