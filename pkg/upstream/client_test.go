package upstream

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

func TestManifestsAndBlobsAnonymous(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	img := up.push(t, "team/app", "v1", 4096)
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")

	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	want := digest.FromBytes(raw)

	desc, err := c.HeadManifest(ctx, repo.Manifest("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if desc != (oci.Descriptor{MediaType: string(mt), Digest: want, Size: int64(len(raw))}) {
		t.Fatalf("HEAD descriptor %+v, want %s %s %d", desc, mt, want, len(raw))
	}
	desc2, b, err := c.GetManifest(ctx, repo.Manifest(want.String()))
	if err != nil {
		t.Fatal(err)
	}
	if desc2 != desc || !bytes.Equal(b, raw) {
		t.Fatalf("GET by digest: %+v, %d bytes; want %+v", desc2, len(b), desc)
	}
	heads := up.fault.requests("/manifests/v1")
	if len(heads) != 1 || heads[0].Method != http.MethodHead {
		t.Fatalf("tag requests %d, want one HEAD", len(heads))
	}
	if got := heads[0].Header.Get("Accept"); got != acceptManifests {
		t.Errorf("Accept %q", got)
	}
	if ns := heads[0].URL.Query().Get("ns"); ns != repo.Registry {
		t.Errorf("ns %q, want %q", ns, repo.Registry)
	}
	if hops := heads[0].Header.Get(oci.HopHeader); hops != "1" {
		t.Errorf("%s %q, want 1", oci.HopHeader, hops)
	}

	d, layer := layerOf(t, img)
	for _, off := range []int64{0, 1, int64(len(layer)) / 2, int64(len(layer)) - 1} {
		rc, size, err := c.FetchBlob(ctx, repo.Blob(d), off)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if size != int64(len(layer)) || !bytes.Equal(got, layer[off:]) {
			t.Fatalf("offset %d: size %d, %d bytes; want %d, %d bytes", off, size, len(got), len(layer), len(layer)-int(off))
		}
	}
	ranged := 0
	for _, r := range up.fault.requests("/blobs/") {
		if r.Header.Get("Range") != "" {
			ranged++
		}
	}
	if ranged < 3 {
		t.Errorf("%d Range requests, want 3", ranged)
	}
}

func TestNotFoundErrors(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	up.push(t, "team/app", "v1", 100)
	c := newClient(t, config.Registry{Endpoints: []string{up.front.URL}})
	ctx, repo := testCtx(t), repoOf(c, "team/app")

	_, err := c.HeadManifest(ctx, repo.Manifest("nope"))
	if !errors.Is(err, oci.ErrManifestUnknown) {
		t.Errorf("HEAD missing tag: %v", err)
	}
	_, _, err = c.GetManifest(ctx, repo.Manifest("nope"))
	var ue *Error
	if !errors.Is(err, oci.ErrManifestUnknown) || !errors.As(err, &ue) || ue.Code != "MANIFEST_UNKNOWN" || ue.Message == "" {
		t.Errorf("GET missing tag: %v", err)
	}
	_, _, err = c.FetchBlob(ctx, repo.Blob(digest.FromString("nope")), 0)
	if !errors.Is(err, oci.ErrBlobUnknown) {
		t.Errorf("missing blob: %v", err)
	}
	_, _, err = c.FetchBlob(ctx, oci.Repo{Registry: "elsewhere", Name: "x"}.Blob(digest.FromString("nope")), 0)
	if !errors.Is(err, oci.ErrRegistryUnknown) {
		t.Errorf("unknown registry: %v", err)
	}
	resp, err := c.Get(ctx, oci.Request{Kind: oci.KindTags, Repo: repo}, "n=10")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"v1"`)) {
		t.Errorf("tags/list: %s", body)
	}
}
