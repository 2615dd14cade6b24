package cache

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// commit moves a fully written temp file into place as d. The caller has
// hashed every byte into dg while writing. Order matters for crash safety:
// check, fsync the bytes, link, fsync the directory, then index. A crash
// before the link leaves only a temp file; after it, a verified file the
// next start indexes. Content committed already is left as it is.
// info carries the size, media type and subject to index.
func (s *Store) commit(f *os.File, dg digest.Digester, d digest.Digest, info Info) error {
	if got := dg.Digest(); got != d {
		return fmt.Errorf("blob %s: got %s: %w", d, got, oci.ErrDigestMismatch)
	}
	if s.beforeSync != nil {
		s.beforeSync()
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", d, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return fmt.Errorf("commit %s: %w", d, err)
	}
	dst := s.BlobPath(d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("commit %s: %w", d, err)
	}
	s.commitMu.RLock() // no removal runs between the link and the index
	defer s.commitMu.RUnlock()
	fresh, err := place(f.Name(), dst)
	if err != nil {
		return fmt.Errorf("commit %s: %w", d, err)
	}
	if !fresh {
		return nil // committed already, by another Put or fill
	}
	// The link is done and cannot be undone: from here on, only log.
	if err := syncDir(filepath.Dir(dst)); err != nil {
		s.log.Warn("sync blob directory", "digest", d, "err", err)
	}
	now := time.Now()
	info.Digest, info.Created, info.Access = d, now, now
	if err := s.putInfo(info); err != nil {
		s.log.Warn("index committed blob", "digest", d, "err", err)
	}
	s.added(info.Size, 1)
	return nil
}

// place puts the temp file src at dst, refusing to replace an existing
// dst (fresh is false then), and removes the temp name. A hard link does
// both atomically; a file system without links gets a rename after a
// check.
func place(src, dst string) (fresh bool, err error) {
	err = os.Link(src, dst)
	switch {
	case err == nil:
		os.Remove(src) // a crash before this leaves a temp file, swept at start
		return true, nil
	case errors.Is(err, fs.ErrExist):
		os.Remove(src)
		return false, nil
	}
	if _, serr := os.Stat(dst); serr == nil {
		os.Remove(src)
		return false, nil
	}
	if err := os.Rename(src, dst); err != nil {
		return false, err
	}
	return true, nil
}

// Put stores small content (a manifest) held in memory. It verifies data
// against d first; content already committed is left as it is.
func (s *Store) Put(d digest.Digest, mediaType string, data []byte) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("put %q: %w", d, oci.ErrDigestInvalid)
	}
	if s.Has(d) {
		return nil
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "put-")
	if err != nil {
		return fmt.Errorf("put %s: %w", d, err)
	}
	defer f.Close()
	dg := d.Algorithm().Digester()
	dg.Hash().Write(data)
	if _, err := s.writeAt(f, data, 0); err != nil {
		os.Remove(f.Name())
		s.kickEvict()
		return fmt.Errorf("put %s: %w", d, err)
	}
	info := manifestInfo(Info{Size: int64(len(data)), MediaType: mediaType}, data)
	if err := s.commit(f, dg, d, info); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

// ReadAll returns committed content d, for small content such as manifests.
// The bytes may be shared with other callers: they must not be modified.
// Content of at most memoMaxBytes is kept in memory once read, so a hit
// reads no file; it is dropped when the content is removed.
func (s *Store) ReadAll(d digest.Digest) ([]byte, Info, error) {
	if data, ok := s.meta.bytes.Peek(d); ok {
		if !s.opts.NoTracking {
			s.acc.touch(d) // an access, as Open notes it
		}
		return data, s.infoOf(d, data), nil
	}
	f, size, err := s.Open(d)
	if err != nil {
		return nil, Info{}, err
	}
	defer f.Close()
	if size > oci.MaxManifestSize {
		return nil, Info{}, fmt.Errorf("read %s: %d bytes: %w", d, size, oci.ErrTooLarge)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, Info{}, fmt.Errorf("read %s: %w", d, err)
	}
	if len(data) <= memoMaxBytes {
		s.meta.bytes.Add(d, data)
		// A removal unlinks the file, then forgets d: if the file is gone
		// now, the removal may have forgotten d before the Add above.
		if !s.Has(d) {
			s.meta.bytes.Remove(d)
		}
	}
	return data, s.infoOf(d, data), nil
}

// infoOf is the index's Info of d, whose bytes are data; content indexed
// without its media type (a manifest stored as a blob) gets the type its
// bytes declare.
func (s *Store) infoOf(d digest.Digest, data []byte) Info {
	info, err := s.Info(d)
	if err != nil {
		info = Info{Digest: d, Size: int64(len(data))}
	}
	if info.MediaType == "" {
		info = manifestInfo(info, data)
	}
	return info
}

// writeAt writes p to a temp file through Options.WriteAt.
func (s *Store) writeAt(f *os.File, p []byte, off int64) (int, error) {
	if s.opts.WriteAt != nil {
		return s.opts.WriteAt(f, p, off)
	}
	return f.WriteAt(p, off)
}
