package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/rancher/wharfie/pkg/registries"
)

// TestK3sRegistriesYAML: the registries.yaml `berth client-config k3s`
// writes, read and pulled through by wharfie, the library rke2 reads its
// registries.yaml with (and whose types k3s's are): mirrors first, each
// request with ns, then the registry's default endpoint. The image's
// registry is named by a dead loopback address, which berth maps to the
// real registry behind a counting proxy: the pull succeeds only through
// berth, and the registry serves each blob once.
func TestK3sRegistriesYAML(t *testing.T) {
	t.Parallel()
	needBerth(t)
	up := newCountingProxy(t, startRegistry(t, "", 200))
	app := pushImage(t, up.Addr, "e2e/app", "v1", false)
	regName := deadAddr(t) // the name image references use; nothing listens there
	b := startBerth(t, berthOpts{Registries: map[string]string{regName: "http://" + up.Addr}, Default: regName})
	file := filepath.Join(t.TempDir(), "registries.yaml")
	out := mustRun(t, time.Minute, nil, needBerth(t), "client-config", "k3s", "--mirror", "http://"+b.Addr,
		"--registry", regName+"=http://"+deadAddr(t), "--file", file)
	conf, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	reg, err := registries.GetPrivateRegistries(file)
	if err != nil {
		t.Fatalf("wharfie reads %s: %v\n%s", file, err, conf)
	}
	if got := reg.Registry.Mirrors[regName].Endpoints; len(got) == 0 || got[0] != "http://"+b.Addr {
		t.Fatalf("wharfie's mirrors for %s: %q\n%s", regName, got, conf)
	}
	ref, err := name.ParseReference(regName+"/"+app.Repo+":"+app.Tag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := reg.Image(ref)
	if err != nil {
		t.Fatalf("wharfie pull %s through %s: %v\n%s", ref, file, err, conf)
	}
	d, err := img.Digest()
	if err != nil || d.String() != app.Digest {
		t.Fatalf("digest %s (%v), want %s", d, err, app.Digest)
	}
	// Every layer read in full and checked against its digest.
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate: %v", err)
	}
	assertBlobsOnce(t, app.Blobs, up)
}
