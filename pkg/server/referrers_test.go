package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/test/upstreamtest"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestReferrersFromStoreWhenUpstreamIsDown: while the upstream answers,
// referrers are its answer (distribution has no referrers API: 404). Once
// it is down, berth lists the stored manifests whose subject is the digest
// and that are known for the repository (a signature an air-gapped site
// imported), filtered by artifactType when asked; content known only for
// another repository is not listed.
func TestReferrersFromStoreWhenUpstreamIsDown(t *testing.T) {
	up := upstreamtest.New(t)
	n := startNode(t, up)
	repo := oci.Repo{Registry: up.Host, Name: "site/app"}
	subject := digest.FromString("the image's manifest")
	referrer := func(artifactType, note string) digest.Digest {
		data := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"` + artifactType + `",` +
			`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
			`"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + subject.String() + `","size":10},` +
			`"annotations":{"note":"` + note + `"}}`)
		d := digest.FromBytes(data)
		if err := n.Store().Put(d, v1.MediaTypeImageManifest, data); err != nil {
			t.Fatal(err)
		}
		return d
	}
	sig, sbom, elsewhere := referrer("application/vnd.example.sig", "sig"), referrer("application/spdx+json", "sbom"), referrer("application/vnd.example.sig", "other repo")
	if err := n.Store().MarkKnown(repo, sig, sbom); err != nil {
		t.Fatal(err)
	}
	if err := n.Store().MarkKnown(oci.Repo{Registry: up.Host, Name: "other/app"}, elsewhere); err != nil {
		t.Fatal(err)
	}
	url := n.URL + "/v2/site/app/referrers/" + subject.String() + "?ns=" + up.Host
	if resp, body := get(t, http.MethodGet, url); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upstream up: %d %s, want its 404", resp.StatusCode, body)
	}

	up.SetDown(true)
	list := func(query string) (v1.Index, http.Header) {
		t.Helper()
		resp, body := get(t, http.MethodGet, url+query)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != v1.MediaTypeImageIndex {
			t.Fatalf("upstream down: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		var idx v1.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatal(err)
		}
		return idx, resp.Header
	}
	idx, _ := list("")
	got := map[digest.Digest]string{}
	for _, m := range idx.Manifests {
		got[m.Digest] = m.ArtifactType
	}
	if len(got) != 2 || got[sig] != "application/vnd.example.sig" || got[sbom] != "application/spdx+json" {
		t.Errorf("referrers from the store: %+v", idx.Manifests)
	}
	idx, h := list("&artifactType=application/spdx%2Bjson")
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom || !strings.Contains(h.Get("OCI-Filters-Applied"), "artifactType") {
		t.Errorf("filtered: %+v %v", idx.Manifests, h)
	}
}
