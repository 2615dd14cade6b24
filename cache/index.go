package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The bbolt schema. Values are JSON; keys are strings.
//
//	index.db
//	├── blobs/   <digest>                   → Info
//	├── tags/    <registry>/<name>:<tag>    → Tag
//	├── pins/    see pin.go
//	├── audit/   see audit.go
//	└── known/   see known.go
//
// The files under blobs/ are the truth; the index holds what the files
// cannot: media types, access times, tag mappings. Start-up reconciles the
// two (reconcile).
var (
	bucketBlobs = []byte("blobs")
	bucketTags  = []byte("tags")
)

// Info is what the index knows of one piece of content.
type Info struct {
	Digest    digest.Digest `json:"-"`
	Size      int64         `json:"size"`
	MediaType string        `json:"mediaType,omitempty"`
	Created   time.Time     `json:"created"`
	Access    time.Time     `json:"access"`
	Pinned    bool          `json:"pinned,omitempty"` // pinned alone, before pins had a bucket; see pin.go
	// Subject is the manifest a stored manifest refers to (a signature's,
	// an SBOM's): the referrers a pin of the subject keeps.
	Subject digest.Digest `json:"subject,omitempty"`
}

// Tag is a cached tag → manifest mapping.
type Tag struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	Checked   time.Time     `json:"checked"` // when the upstream last confirmed it
}

func openIndex(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o644, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open index %s: %w", filepath.Base(path), ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", filepath.Base(path), err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketBlobs, bucketTags, bucketPins, bucketAudit, bucketKnown} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open index: %w", err)
	}
	return db, nil
}

func (s *Store) putInfo(info Info) error {
	v, err := json.Marshal(info)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBlobs).Put([]byte(info.Digest), v)
	})
	if err == nil {
		s.meta.addInfo(info)
	}
	return err
}

// Info returns what the index knows of committed content d.
func (s *Store) Info(d digest.Digest) (Info, error) {
	if info, ok := s.meta.info(d); ok {
		return info, nil
	}
	var info Info
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketBlobs).Get([]byte(d))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &info) // copies out of the transaction
	})
	if err != nil {
		return Info{}, fmt.Errorf("info %s: %w", d, err)
	}
	info.Digest = d
	s.meta.addInfo(info)
	return info, nil
}

// Tag returns the cached mapping of a tag key (see TagKey).
func (s *Store) Tag(key string) (Tag, error) {
	if t, ok := s.meta.tag(key); ok {
		return t, nil
	}
	var t Tag
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTags).Get([]byte(key))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &t)
	})
	if err != nil {
		return Tag{}, fmt.Errorf("tag %s: %w", key, err)
	}
	s.meta.addTag(key, t)
	return t, nil
}

// SetTag records a tag mapping.
func (s *Store) SetTag(key string, t Tag) error {
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTags).Put([]byte(key), v)
	})
	if err != nil {
		return fmt.Errorf("set tag %s: %w", key, err)
	}
	s.meta.addTag(key, t)
	return nil
}

// TagKey is the index key of a tag of a repository on a registry.
func TagKey(registry, name, tag string) string { return registry + "/" + name + ":" + tag }

// reconcile brings the index in line with the files after a crash: an
// entry whose file is gone is dropped; a file without an entry (the process
// died between link and index) is re-hashed, then indexed or removed. A
// manifest indexed so gets its media type back from its own bytes (see
// manifestInfo), or it would be served without a Content-Type. Files
// with entries were verified before their link and are not re-hashed, nor
// even stat'ed: their sizes come from the index. It sets the usage counters.
func (s *Store) reconcile() error {
	present, err := s.listBlobs()
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	var bytes, blobs int64
	err = s.db.Update(func(tx *bolt.Tx) error {
		bytes, blobs = 0, 0
		b := tx.Bucket(bucketBlobs)
		var gone [][]byte
		indexed := map[digest.Digest]bool{}
		err := b.ForEach(func(k, v []byte) error {
			d := digest.Digest(k)
			var info Info
			if _, ok := present[d]; !ok || json.Unmarshal(v, &info) != nil {
				gone = append(gone, append([]byte(nil), k...))
				return nil
			}
			indexed[d] = true
			bytes += info.Size
			blobs++
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range gone {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if len(gone) > 0 {
			s.log.Info("dropped index entries without files", "count", len(gone))
		}
		now := time.Now()
		for d, path := range present {
			if indexed[d] {
				continue
			}
			size, err := hashFile(path, d)
			if err != nil {
				s.log.Warn("remove unverified file in store", "digest", d, "err", err)
				if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				continue
			}
			info := Info{Size: size, Created: now, Access: now}
			if size <= oci.MaxManifestSize {
				if data, err := os.ReadFile(path); err == nil {
					info = manifestInfo(info, data)
				}
			}
			if info.MediaType != "" {
				s.log.Info("restored the media type of a manifest indexed after a crash", "digest", d, "mediaType", info.MediaType)
			}
			v, _ := json.Marshal(info)
			if err := b.Put([]byte(d), v); err != nil {
				return err
			}
			bytes += size
			blobs++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	s.bytes.Store(bytes)
	s.blobs.Store(blobs)
	return nil
}

// manifestInfo completes info from content data when data is a manifest or
// an index: the media type (its own mediaType field, else sniffed) unless
// info has one, and the subject. Other content is returned as it is.
func manifestInfo(info Info, data []byte) Info {
	m, ok := parseRefs(data)
	if !ok {
		return info
	}
	if info.MediaType == "" || info.MediaType == "application/octet-stream" {
		info.MediaType = oci.SniffMediaType(data)
	}
	if m.Subject != nil && m.Subject.Digest.Validate() == nil {
		info.Subject = m.Subject.Digest
	}
	return info
}

// listBlobs lists the files under blobs/ by name, without stat'ing them,
// and removes files whose names are no digest.
func (s *Store) listBlobs() (map[digest.Digest]string, error) {
	present := map[digest.Digest]string{}
	root := filepath.Join(s.root, "blobs")
	algs, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, alg := range algs {
		prefixes, err := os.ReadDir(filepath.Join(root, alg.Name()))
		if err != nil {
			return nil, err
		}
		for _, pre := range prefixes {
			dir := filepath.Join(root, alg.Name(), pre.Name())
			names, err := os.ReadDir(dir)
			if err != nil {
				return nil, err
			}
			for _, e := range names {
				hex, path := e.Name(), filepath.Join(dir, e.Name())
				d := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), hex)
				if e.IsDir() || d.Validate() != nil || hex[:2] != pre.Name() {
					s.log.Warn("remove stray file in store", "path", path)
					if err := os.RemoveAll(path); err != nil {
						return nil, err
					}
					continue
				}
				present[d] = path
			}
		}
	}
	return present, nil
}

// hashFile checks that the file at path hashes to d and returns its size.
func hashFile(path string, d digest.Digest) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	v := d.Verifier()
	n, err := io.Copy(v, f)
	if err != nil {
		return 0, err
	}
	if !v.Verified() {
		return n, fmt.Errorf("blob %s: %w", d, oci.ErrDigestMismatch)
	}
	return n, nil
}

// accessLog collects last-access times in memory; flush writes them to
// bbolt in one transaction per interval, so a hit never waits on a write.
type accessLog struct{ m sync.Map } // digest.Digest → int64 unix nanoseconds

func (a *accessLog) touch(d digest.Digest) { a.m.Store(d, time.Now().UnixNano()) }

// flush writes the access times and audit counts gathered in memory.
func (s *Store) flush() {
	s.flushAccess()
	if err := s.flushAudit(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		s.log.Warn("flush audit record", "err", err)
	}
}

// every runs fn each interval until the store closes. The caller has added
// to s.wg for it.
func (s *Store) every(interval time.Duration, fn func()) {
	defer s.wg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// flushAccess writes the access times gathered since the last flush.
func (s *Store) flushAccess() {
	batch := map[digest.Digest]int64{}
	s.acc.m.Range(func(k, v any) bool {
		batch[k.(digest.Digest)] = v.(int64)
		s.acc.m.CompareAndDelete(k, v)
		return true
	})
	if len(batch) == 0 {
		return
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		for d, ns := range batch {
			v := b.Get([]byte(d))
			if v == nil {
				continue
			}
			var info Info
			if err := json.Unmarshal(v, &info); err != nil {
				return err
			}
			info.Access = time.Unix(0, ns)
			nv, _ := json.Marshal(info)
			if err := b.Put([]byte(d), nv); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
		s.log.Warn("flush access times", "blobs", len(batch), "err", err)
	}
}
