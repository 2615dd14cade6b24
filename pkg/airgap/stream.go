package airgap

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// CopyLayout reads a layout tar (as a running berth's admin API exports
// it) and writes it to w, checking each blob against its name as it
// passes; then it finishes w with the stream's index.json. A blob that
// does not match, or a stream cut short, aborts w.
func CopyLayout(r io.Reader, w Writer) (v1.Index, error) {
	var index []byte
	err := walkTar(r, func(e entry) error {
		if e.name == v1.ImageIndexFile {
			var err error
			index, err = io.ReadAll(io.LimitReader(e.r, oci.MaxManifestSize))
			return err
		}
		rest, ok := strings.CutPrefix(e.name, "blobs/")
		if !ok {
			return nil
		}
		alg, hex, _ := strings.Cut(rest, "/")
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%s: %w", e.name, oci.ErrDigestInvalid)
		}
		v := d.Verifier()
		if err := w.Blob(d, e.size, io.TeeReader(e.r, v)); err != nil {
			return fmt.Errorf("write %s: %w", d, err)
		}
		if !v.Verified() {
			return fmt.Errorf("blob %s: %w", d, oci.ErrDigestMismatch)
		}
		return nil
	})
	var idx v1.Index
	if err == nil && index == nil {
		err = fmt.Errorf("layout stream: no index.json: %w", ErrIncomplete)
	}
	if err == nil {
		err = json.Unmarshal(index, &idx)
	}
	if err == nil {
		err = w.Finish(idx)
	}
	if err != nil {
		w.Abort()
		return idx, err
	}
	return idx, nil
}

// TarDir writes the regular files under dir (an OCI layout) to w as a tar
// stream, for sending a layout directory to a running berth.
func TarDir(dir string, w io.Writer) error {
	t := NewTarWriter(w)
	err := walkDir(dir, func(e entry) error {
		if err := t.header(e.name, e.size, false); err != nil {
			return err
		}
		_, err := io.CopyN(t.tw, e.r, e.size)
		return err
	})
	if err != nil {
		return err
	}
	return t.tw.Close()
}

// PinnedImages returns the pinned manifests of s that no other pinned
// manifest includes, each named by a tag that points at it when one does.
func PinnedImages(s *cache.Store) ([]Image, error) {
	infos, err := s.Infos()
	if err != nil {
		return nil, err
	}
	pinned := map[digest.Digest]bool{}
	for _, info := range infos {
		if info.Pinned && isManifest(info.MediaType) {
			pinned[info.Digest] = true
		}
	}
	// An index's pinned platforms go with the index.
	for d := range pinned {
		data, _, err := s.ReadAll(d)
		if err != nil {
			continue
		}
		var m manifestDoc
		if json.Unmarshal(data, &m) == nil {
			for _, c := range m.Manifests {
				if c.Digest != d {
					delete(pinned, c.Digest)
				}
			}
		}
	}
	tags, err := s.TagsWithPrefix("")
	if err != nil {
		return nil, err
	}
	named := map[digest.Digest]string{}
	for key, t := range tags {
		if old, ok := named[t.Digest]; !ok || key < old {
			named[t.Digest] = key
		}
	}
	var out []Image
	for d := range pinned {
		img := Image{Digest: d, Ref: d.String()}
		if key, ok := named[d]; ok {
			if repo, tag, _, err := ParseRef(key); err == nil {
				img = Image{Repo: repo, Tag: tag, Digest: d, Ref: key}
			}
		}
		out = append(out, img)
	}
	return out, nil
}
