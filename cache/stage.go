package cache

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// Staged is content written to the store's tmp/ and verified against its
// digest, but not yet committed: an import stages everything it carries,
// checks the whole, then commits. A staged file that is never committed is
// removed by Discard, or by the next Open's sweep after a crash.
type Staged struct {
	s      *Store
	path   string
	Digest digest.Digest
	Size   int64
}

// Stage copies r into a temp file, hashing every byte, and checks the
// result against d and, when size is not negative, against size. It reads
// at most size+1 bytes (or, with size -1, to EOF). Bytes that do not
// match (short, long or different) give an error that wraps
// oci.ErrDigestMismatch and names d; nothing is left behind then. Stage
// may run concurrently with anything. With d empty, Stage computes the
// sha256 digest instead (an archive that names its files otherwise).
func (s *Store) Stage(r io.Reader, d digest.Digest, size int64) (*Staged, error) {
	alg := digest.Canonical
	if d != "" {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("stage %q: %w", d, oci.ErrDigestInvalid)
		}
		alg = d.Algorithm()
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "stage-")
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", d, err)
	}
	ok := false
	defer func() {
		f.Close()
		if !ok {
			os.Remove(f.Name())
		}
	}()
	if size >= 0 {
		r = io.LimitReader(r, size+1)
	}
	dg := alg.Digester()
	n, err := io.Copy(io.MultiWriter(f, dg.Hash()), r)
	if err != nil {
		return nil, fmt.Errorf("stage %s: %w", d, err)
	}
	if size >= 0 && n != size {
		return nil, fmt.Errorf("blob %s: %d bytes, want %d: %w", d, n, size, oci.ErrDigestMismatch)
	}
	if d == "" {
		d = dg.Digest()
	} else if got := dg.Digest(); got != d {
		return nil, fmt.Errorf("blob %s: got %s: %w", d, got, oci.ErrDigestMismatch)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync %s: %w", d, err)
	}
	ok = true
	return &Staged{s: s, path: f.Name(), Digest: d, Size: n}, nil
}

// Open reads the staged bytes (an import parses staged manifests).
func (st *Staged) Open() (*os.File, error) { return os.Open(st.path) }

// Commit links the staged file into place as committed content with its
// media type (a manifest's subject is indexed too), as a fill's commit
// does. Content committed already is left as it is. After Commit the
// Staged is spent.
func (st *Staged) Commit(mediaType string) error {
	s := st.s
	info := Info{Size: st.Size, MediaType: mediaType}
	if mediaType != "" && st.Size <= oci.MaxManifestSize {
		if data, err := os.ReadFile(st.path); err == nil {
			info = manifestInfo(info, data)
		}
	}
	if err := os.Chmod(st.path, 0o444); err != nil {
		return fmt.Errorf("commit %s: %w", st.Digest, err)
	}
	dst := s.BlobPath(st.Digest)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("commit %s: %w", st.Digest, err)
	}
	s.commitMu.RLock()
	defer s.commitMu.RUnlock()
	fresh, err := place(st.path, dst)
	if err != nil {
		return fmt.Errorf("commit %s: %w", st.Digest, err)
	}
	if !fresh {
		if info, err := s.Info(st.Digest); err == nil && info.MediaType == "" && mediaType != "" {
			info.MediaType = mediaType
			if err := s.putInfo(info); err != nil {
				s.log.Warn("index media type", "digest", st.Digest, "err", err)
			}
		}
		return nil
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		s.log.Warn("sync blob directory", "digest", st.Digest, "err", err)
	}
	now := time.Now()
	info.Digest, info.Created, info.Access = st.Digest, now, now
	if err := s.putInfo(info); err != nil {
		s.log.Warn("index committed blob", "digest", st.Digest, "err", err)
	}
	s.added(st.Size, 1)
	return nil
}

// Discard removes a staged file that will not be committed.
func (st *Staged) Discard() { os.Remove(st.path) }

// SetTags records tag mappings in one transaction: an import records its
// tags last and all at once, so a kill leaves all of them or none.
func (s *Store) SetTags(tags map[string]Tag) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTags)
		for k, t := range tags {
			v, err := json.Marshal(t)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("set tags: %w", err)
	}
	for k, t := range tags {
		s.meta.addTag(k, t)
		// The operator's import says what belongs where.
		if repo, ok := repoOfKey(k); ok {
			if err := s.seedManifest(repo, t.Digest, 2); err != nil {
				return fmt.Errorf("set tags: %w", err)
			}
		}
	}
	return nil
}

// TagsWithPrefix returns the cached tag mappings whose keys (see TagKey)
// start with prefix, such as "registry/name:" for one repository.
func (s *Store) TagsWithPrefix(prefix string) (map[string]Tag, error) {
	out := map[string]Tag{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTags).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			var t Tag
			if json.Unmarshal(v, &t) == nil {
				out[string(k)] = t
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	return out, nil
}

// Infos returns every index entry, for commands that look over the whole
// store (export looks for referrers among its manifests).
func (s *Store) Infos() ([]Info, error) {
	var out []Info
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).ForEach(func(k, v []byte) error {
			var info Info
			if json.Unmarshal(v, &info) != nil {
				return nil
			}
			info.Digest = digest.Digest(k)
			out = append(out, info)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	return out, nil
}
