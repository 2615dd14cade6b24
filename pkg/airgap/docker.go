package airgap

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// dockerSaveEntry is one image of a docker save archive's manifest.json.
type dockerSaveEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// planDockerSave turns each image of a docker save archive into an OCI
// image manifest over the archive's own files. A docker save carries no
// manifest digests; what it carries is the config's digest (its file
// name) and the config's rootfs.diff_ids, the digests of the uncompressed
// layers: both are checked here, so a tampered layer or config fails.
func (im *importer) planDockerSave() error {
	var entries []dockerSaveEntry
	if err := json.Unmarshal(im.files["manifest.json"], &entries); err != nil {
		return fmt.Errorf("manifest.json: %w", err)
	}
	for _, e := range entries {
		if err := im.planDockerImage(e); err != nil {
			return err
		}
	}
	return nil
}

func (im *importer) planDockerImage(e dockerSaveEntry) error {
	cfgData, cfgDigest, err := im.dockerConfig(e.Config)
	if err != nil {
		return err
	}
	var cfg v1.Image
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		return fmt.Errorf("config %s: %w", cfgDigest, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(e.Layers) {
		return fmt.Errorf("config %s: %d diff_ids for %d layers: %w", cfgDigest, len(cfg.RootFS.DiffIDs), len(e.Layers), ErrIncomplete)
	}
	cfgSt, err := im.s.Stage(bytes.NewReader(cfgData), cfgDigest, int64(len(cfgData)))
	if err != nil {
		return err
	}
	cfgSt = im.keep(cfgSt)
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: cfgDigest, Size: cfgSt.Size},
	}
	var layers []*cache.Staged
	for i, name := range e.Layers {
		st, ok := im.named[cleanName(name)]
		if !ok {
			return fmt.Errorf("layer %s: not in the archive: %w", name, ErrIncomplete)
		}
		mt, diffID, err := layerDiffID(st)
		if err != nil {
			return err
		}
		if diffID != cfg.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %s (blob %s): uncompressed digest %s, config says %s: %w",
				name, st.Digest, diffID, cfg.RootFS.DiffIDs[i], oci.ErrDigestMismatch)
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: mt, Digest: st.Digest, Size: st.Size})
		layers = append(layers, st)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	mst, err := im.s.Stage(bytes.NewReader(data), "", int64(len(data)))
	if err != nil {
		return err
	}
	mst = im.keep(mst)
	im.add(cfgSt, "")
	for _, st := range layers {
		im.add(st, "")
	}
	im.add(mst, v1.MediaTypeImageManifest)
	im.rep.Images++
	im.rep.Manifests++
	desc := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: mst.Digest, Size: mst.Size}
	for _, rt := range e.RepoTags {
		desc.Annotations = map[string]string{annotationImageName: rt}
		if !strings.Contains(rt, "/") { // docker's short names are Docker Hub's
			desc.Annotations[annotationImageName] = "docker.io/library/" + rt
		}
		im.tag(desc)
	}
	if len(e.RepoTags) == 0 {
		im.tag(desc) // pinned by digest
	}
	return nil
}

// dockerConfig returns an image config of a docker save archive and its
// digest, checked against the file's name (<hex>.json or
// blobs/sha256/<hex>).
func (im *importer) dockerConfig(name string) ([]byte, digest.Digest, error) {
	name = cleanName(name)
	hex := strings.TrimSuffix(path.Base(name), ".json")
	want := digest.NewDigestFromEncoded(digest.SHA256, hex)
	if data, ok := im.files[name]; ok {
		got := digest.FromBytes(data)
		if want.Validate() == nil && got != want {
			return nil, "", fmt.Errorf("config %s: got %s: %w", want, got, oci.ErrDigestMismatch)
		}
		return data, got, nil
	}
	if st, ok := im.named[name]; ok { // blobs/sha256/<hex>, verified when staged
		data, err := readStaged(st)
		return data, st.Digest, err
	}
	return nil, "", fmt.Errorf("config %s: not in the archive: %w", name, ErrIncomplete)
}

// layerDiffID returns a staged layer's media type and the digest of its
// uncompressed bytes: its own digest for a plain tar, else that of the
// gunzipped stream.
func layerDiffID(st *cache.Staged) (string, digest.Digest, error) {
	f, err := st.Open()
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	var magic [2]byte
	if n, _ := io.ReadFull(f, magic[:]); n < 2 || magic != [2]byte{0x1f, 0x8b} {
		return v1.MediaTypeImageLayer, st.Digest, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", "", err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return "", "", fmt.Errorf("layer %s: %w", st.Digest, err)
	}
	dg := digest.Canonical.Digester()
	if _, err := io.Copy(dg.Hash(), zr); err != nil {
		return "", "", fmt.Errorf("layer %s: %w", st.Digest, err)
	}
	return v1.MediaTypeImageLayerGzip, dg.Digest(), nil
}
