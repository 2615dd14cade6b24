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

// PinnedImages returns every pinned image of s, named as it was pinned:
// a pin by tag exports under that tag (at the digest the tag has now), a
// pin by digest under its repository when it names one.
func PinnedImages(s *cache.Store) ([]Image, error) {
	pins, err := s.Pins()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, p := range pins {
		img := Image{Digest: p.Digest, Ref: p.Digest.String()}
		if p.Current != "" {
			img.Digest = p.Current
		}
		if repo, tag, d, err := ParseRef(p.Ref); err == nil && strings.Contains(p.Ref, "/") {
			img.Repo, img.Tag, img.Ref = repo, tag, p.Ref
			if d != "" {
				img.Ref = repo.String() + "@" + d.String()
			}
		}
		if s.Has(img.Digest) {
			out = append(out, img)
		}
	}
	return out, nil
}
