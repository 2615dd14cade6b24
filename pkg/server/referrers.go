package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/berth-registry/berth/pkg/registry"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// storeReferrers passes tags/list and referrers through to the upstream,
// and answers referrers from the store when the upstream cannot be asked
// (down, or an air-gapped site's dead endpoint): the stored manifests
// whose subject is the digest and that are known for the repository, so
// signatures and SBOMs imported or preloaded stay discoverable offline.
type storeReferrers struct {
	registry.Passthrough
	store *cache.Store
}

func (s storeReferrers) Get(ctx context.Context, req oci.Request, rawQuery string) (*http.Response, error) {
	resp, err := s.Passthrough.Get(ctx, req, rawQuery)
	if err == nil || req.Kind != oci.KindReferrers || !errors.Is(err, oci.ErrUnavailable) || ctx.Err() != nil {
		return resp, err
	}
	q, _ := url.ParseQuery(rawQuery)
	idx, filtered, ferr := s.fromStore(req, q.Get("artifactType"))
	if ferr != nil {
		return nil, err // the upstream's error says more
	}
	body, ferr := json.Marshal(idx)
	if ferr != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {v1.MediaTypeImageIndex}, "Content-Length": {strconv.Itoa(len(body))}}
	if filtered {
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	return &http.Response{StatusCode: http.StatusOK, Header: h, ContentLength: int64(len(body)),
		Body: io.NopCloser(bytes.NewReader(body))}, nil
}

// fromStore lists the referrers of req.Digest the store holds for
// req.Repo, those of artifactType only when it is set.
func (s storeReferrers) fromStore(req oci.Request, artifactType string) (v1.Index, bool, error) {
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{}}
	infos, err := s.store.Infos()
	if err != nil {
		return idx, false, err
	}
	for _, info := range infos {
		if info.Subject != req.Digest || !s.store.Known(req.Repo, info.Digest) || info.Size > oci.MaxManifestSize {
			continue
		}
		data, err := os.ReadFile(s.store.BlobPath(info.Digest)) // no access time moves for a listing
		if err != nil || info.Digest.Algorithm().FromBytes(data) != info.Digest {
			continue
		}
		m, err := oci.DecodeManifest(data)
		if err != nil {
			continue
		}
		at := m.ArtifactType
		if at == "" && m.Config != nil {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			continue
		}
		mt := m.MediaType
		if mt == "" {
			mt = info.MediaType
		}
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Digest: info.Digest, Size: info.Size,
			ArtifactType: at, Annotations: m.Annotations})
	}
	return idx, artifactType != "", nil
}
