// Package airgap carries images between berth stores that share no
// network: Export writes images from a store as an OCI image layout (a
// directory, or a tar of one), Import loads an OCI layout or a docker save
// tar into a store. Every byte is verified against its digest on both
// sides; an import checks everything it carries before it commits any of
// it, so a tampered or truncated archive changes nothing.
package airgap

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationRefName names an image in an OCI layout's index.json: berth
// writes the full reference (registry/name:tag), as skopeo and crane read it.
const AnnotationRefName = v1.AnnotationRefName

// annotationImageName is containerd's (and docker save's) full image name.
const annotationImageName = "io.containerd.image.name"

// Writer receives an OCI layout: each blob once, then the index.
type Writer interface {
	// Blob writes blobs/<alg>/<hex> with size bytes from r.
	Blob(d digest.Digest, size int64, r io.Reader) error
	// Finish writes oci-layout and index.json and makes the layout whole.
	Finish(index v1.Index) error
	// Abort removes what was written.
	Abort()
}

func layoutFiles(index v1.Index) (layout, idx []byte, err error) {
	layout, err = json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err != nil {
		return nil, nil, err
	}
	idx, err = json.Marshal(index)
	return layout, idx, err
}

// NewIndex returns an empty OCI image index.
func NewIndex() v1.Index {
	return v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: []v1.Descriptor{}}
}

// TarWriter writes a layout as a tar stream (oci-archive).
type TarWriter struct {
	tw  *tar.Writer
	now time.Time
}

// NewTarWriter writes a layout tar to w. The caller closes w after Finish.
func NewTarWriter(w io.Writer) *TarWriter {
	return &TarWriter{tw: tar.NewWriter(w), now: time.Now().UTC().Truncate(time.Second)}
}

func (t *TarWriter) header(name string, size int64, dir bool) error {
	h := &tar.Header{Name: name, Size: size, Mode: 0o644, ModTime: t.now, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
	if dir {
		h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
	}
	return t.tw.WriteHeader(h)
}

// Blob writes one blob entry.
func (t *TarWriter) Blob(d digest.Digest, size int64, r io.Reader) error {
	if err := t.header(path.Join("blobs", d.Algorithm().String(), d.Encoded()), size, false); err != nil {
		return err
	}
	_, err := io.Copy(t.tw, r)
	return err
}

// Finish writes oci-layout and index.json and closes the tar stream.
func (t *TarWriter) Finish(index v1.Index) error {
	layout, idx, err := layoutFiles(index)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{v1.ImageLayoutFile, layout}, {v1.ImageIndexFile, idx}} {
		if err := t.header(f.name, int64(len(f.data)), false); err != nil {
			return err
		}
		if _, err := t.tw.Write(f.data); err != nil {
			return err
		}
	}
	return t.tw.Close()
}

// Abort does nothing: the caller discards the stream.
func (t *TarWriter) Abort() {}

// DirWriter writes a layout into a directory, which must not exist or be
// empty. index.json is written last, so a layout without it is unfinished.
type DirWriter struct{ dir string }

// NewDirWriter prepares dir.
func NewDirWriter(dir string) (*DirWriter, error) {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s: directory not empty", dir)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs"), 0o755); err != nil {
		return nil, err
	}
	return &DirWriter{dir: dir}, nil
}

// Blob writes blobs/<alg>/<hex> through a temp name.
func (w *DirWriter) Blob(d digest.Digest, size int64, r io.Reader) error {
	dst := filepath.Join(w.dir, "blobs", d.Algorithm().String(), d.Encoded())
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return writeFile(dst, func(f *os.File) error { _, err := io.Copy(f, r); return err })
}

// Finish writes oci-layout, then index.json.
func (w *DirWriter) Finish(index v1.Index) error {
	layout, idx, err := layoutFiles(index)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(w.dir, v1.ImageLayoutFile), layout, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(w.dir, v1.ImageIndexFile), func(f *os.File) error { _, err := f.Write(idx); return err })
}

// Abort removes the directory's contents.
func (w *DirWriter) Abort() {
	os.RemoveAll(filepath.Join(w.dir, "blobs"))
	os.Remove(filepath.Join(w.dir, v1.ImageLayoutFile))
}

// writeFile writes dst through a temp file in its directory, synced and
// renamed into place.
func writeFile(dst string, fill func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := fill(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

// entry is one file of an archive being imported.
type entry struct {
	name string // slash-separated, relative, cleaned
	size int64
	r    io.Reader
}

// walkTar calls fn for each regular file of a tar stream, in order.
func walkTar(r io.Reader, fn func(entry) error) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := cleanName(h.Name)
		if name == "" {
			continue
		}
		if err := fn(entry{name: name, size: h.Size, r: tr}); err != nil {
			return err
		}
	}
}

// walkDir calls fn for each regular file under dir.
func walkDir(dir string, fn func(entry) error) error {
	return filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		return fn(entry{name: filepath.ToSlash(rel), size: fi.Size(), r: f})
	})
}

// cleanName makes an archive path relative and clean; "" for one that
// climbs out.
func cleanName(name string) string {
	name = path.Clean("/" + strings.TrimPrefix(name, "./"))[1:]
	if name == "" || strings.HasPrefix(name, "..") {
		return ""
	}
	return name
}
