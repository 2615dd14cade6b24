package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The bbolt schema. Values are JSON; keys are strings.
//
//	index.db
//	├── blobs/   <digest>                   → Info
//	└── tags/    <registry>/<name>:<tag>    → Tag
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
	Pinned    bool          `json:"pinned,omitempty"`
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
	if err != nil {
		return nil, fmt.Errorf("open index %s: %w", filepath.Base(path), err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketBlobs, bucketTags} {
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
// died between rename and index) is indexed from its stat. Files under
// blobs/ were verified before their rename, so none is re-hashed here.
func (s *Store) reconcile() error {
	present := map[digest.Digest]int64{}
	root := filepath.Join(s.root, "blobs")
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		alg, hex := filepath.Dir(filepath.Dir(rel)), filepath.Base(rel)
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), hex)
		if d.Validate() != nil || filepath.Base(filepath.Dir(rel)) != hex[:min(2, len(hex))] {
			s.log.Warn("remove stray file in store", "path", rel)
			return os.Remove(path)
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		present[d] = fi.Size()
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs)
		var gone [][]byte
		indexed := map[digest.Digest]bool{}
		err := b.ForEach(func(k, _ []byte) error {
			d := digest.Digest(k)
			if _, ok := present[d]; !ok {
				gone = append(gone, append([]byte(nil), k...))
			}
			indexed[d] = true
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
		now := time.Now()
		for d, size := range present {
			if indexed[d] {
				continue
			}
			v, _ := json.Marshal(Info{Size: size, Created: now, Access: now})
			if err := b.Put([]byte(d), v); err != nil {
				return err
			}
		}
		if len(gone) > 0 {
			s.log.Info("dropped index entries without files", "count", len(gone))
		}
		return nil
	})
}

// accessLog collects last-access times in memory; flushLoop writes them to
// bbolt in one transaction per interval, so a hit never waits on a write.
type accessLog struct{ m sync.Map } // digest.Digest → int64 unix nanoseconds

func (a *accessLog) touch(d digest.Digest) { a.m.Store(d, time.Now().UnixNano()) }

func (s *Store) flushLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.flushAccess()
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
