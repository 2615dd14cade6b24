package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The audit record: what this node served, per registry and repository.
// A hit adds to an atomic counter in memory (found through a sync.Map, no
// lock, no write transaction); flush adds the counts to bbolt with the
// access times.
//
//	audit/  <registry> 0 <name> 0 <kind> 0 <tag> 0 <digest>  → auditRecord
//
// kind is "m" (a manifest; tag is the tag it was asked by, or empty when
// asked by digest) or "b" (a blob; tag empty).

var bucketAudit = []byte("audit")

const (
	kindManifest = "m"
	kindBlob     = "b"
)

type auditRecord struct {
	Count int64     `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

type auditDelta struct {
	count, first, last atomic.Int64 // first and last in unix nanoseconds
}

// auditLog gathers audit counts between flushes. Its entries stay for the
// life of the process, one per (repository, content) served.
type auditLog struct{ m sync.Map } // key string → *auditDelta

func (a *auditLog) add(key string) {
	v, ok := a.m.Load(key)
	if !ok {
		v, _ = a.m.LoadOrStore(key, new(auditDelta))
	}
	dl := v.(*auditDelta)
	now := time.Now().UnixNano()
	dl.first.CompareAndSwap(0, now)
	dl.last.Store(now)
	dl.count.Add(1)
}

func auditKey(repo oci.Repo, kind, tag string, d digest.Digest) string {
	return strings.Join([]string{repo.Registry, repo.Name, kind, tag, string(d)}, "\x00")
}

// RecordManifest notes that a client was served manifest d of repo, asked
// for by tag (or by digest when tag is ""). It takes no lock and writes
// nothing; the count reaches the index with the next flush.
func (s *Store) RecordManifest(repo oci.Repo, tag string, d digest.Digest) {
	if !s.opts.NoTracking {
		s.aud.add(auditKey(repo, kindManifest, tag, d))
	}
}

// RecordBlob notes that a client was served blob d of repo, like
// RecordManifest.
func (s *Store) RecordBlob(repo oci.Repo, d digest.Digest) {
	if !s.opts.NoTracking {
		s.aud.add(auditKey(repo, kindBlob, "", d))
	}
}

// flushAudit adds the counts gathered since the last flush to the index.
func (s *Store) flushAudit() error {
	type pending struct {
		key         string
		count       int64
		first, last int64
	}
	var batch []pending
	s.aud.m.Range(func(k, v any) bool {
		dl := v.(*auditDelta)
		if n := dl.count.Swap(0); n > 0 {
			batch = append(batch, pending{k.(string), n, dl.first.Load(), dl.last.Load()})
		}
		return true
	})
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		for _, p := range batch {
			var rec auditRecord
			if v := b.Get([]byte(p.key)); v != nil {
				_ = json.Unmarshal(v, &rec) // a damaged record starts over
			}
			first, last := time.Unix(0, p.first), time.Unix(0, p.last)
			if rec.First.IsZero() || first.Before(rec.First) {
				rec.First = first
			}
			if last.After(rec.Last) {
				rec.Last = last
			}
			rec.Count += p.count
			v, _ := json.Marshal(rec)
			if err := b.Put([]byte(p.key), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil { // put the counts back for the next flush
		for _, p := range batch {
			if v, ok := s.aud.m.Load(p.key); ok {
				v.(*auditDelta).count.Add(p.count)
			}
		}
	}
	return err
}

// AuditRepo is what one repository served: the image's pull count, and
// every manifest (by tag and by digest) and blob with its count and first
// and last time.
type AuditRepo struct {
	Registry string `json:"registry"`
	Name     string `json:"name"`
	// Pulls counts pulls of the image: requests for its tags, or for its
	// manifests by digest when it was never asked by tag.
	Pulls     int64        `json:"pulls"`
	First     time.Time    `json:"first"`
	Last      time.Time    `json:"last"`
	Tags      []AuditEntry `json:"tags,omitempty"`      // manifests asked for by tag
	Manifests []AuditEntry `json:"manifests,omitempty"` // manifests asked for by digest
	Blobs     []AuditEntry `json:"blobs,omitempty"`
}

// AuditEntry is one piece of content served by a repository.
type AuditEntry struct {
	Tag    string        `json:"tag,omitempty"`
	Digest digest.Digest `json:"digest"`
	Count  int64         `json:"count"`
	First  time.Time     `json:"first"`
	Last   time.Time     `json:"last"`
}

// Audit flushes the counts gathered in memory and returns the audit
// record, sorted by registry and name. It takes a write transaction.
func (s *Store) Audit() ([]AuditRepo, error) {
	if err := s.flushAudit(); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return readAudit(s.db)
}

// ReadAudit reads the audit record of the store at root without opening
// the store. It fails within timeout while a running server holds the
// store: ask the server's /debug/audit endpoint then. Counts the server
// has not flushed yet (up to its flush interval) are not included.
func ReadAudit(root string, timeout time.Duration) ([]AuditRepo, error) {
	db, err := bolt.Open(filepath.Join(root, "index.db"), 0o644, &bolt.Options{Timeout: timeout, ReadOnly: true})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open index: %w", ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open index: %w", err)
	}
	defer db.Close()
	return readAudit(db)
}

func readAudit(db *bolt.DB) ([]AuditRepo, error) {
	repos := map[[2]string]*AuditRepo{}
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			parts := bytes.Split(k, []byte{0})
			var rec auditRecord
			if len(parts) != 5 || json.Unmarshal(v, &rec) != nil {
				return nil
			}
			id := [2]string{string(parts[0]), string(parts[1])}
			r := repos[id]
			if r == nil {
				r = &AuditRepo{Registry: id[0], Name: id[1]}
				repos[id] = r
			}
			e := AuditEntry{Tag: string(parts[3]), Digest: digest.Digest(parts[4]), Count: rec.Count, First: rec.First, Last: rec.Last}
			r.add(string(parts[2]), e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("read audit: %w", err)
	}
	out := make([]AuditRepo, 0, len(repos))
	for _, r := range repos {
		r.Pulls = sumCounts(r.Tags)
		if r.Pulls == 0 {
			r.Pulls = sumCounts(r.Manifests)
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b AuditRepo) int {
		return strings.Compare(a.Registry+"\x00"+a.Name, b.Registry+"\x00"+b.Name)
	})
	return out, nil
}

func (r *AuditRepo) add(kind string, e AuditEntry) {
	switch {
	case kind == kindBlob:
		r.Blobs = append(r.Blobs, e)
	case e.Tag != "":
		r.Tags = append(r.Tags, e)
	default:
		r.Manifests = append(r.Manifests, e)
	}
	if r.First.IsZero() || e.First.Before(r.First) {
		r.First = e.First
	}
	if e.Last.After(r.Last) {
		r.Last = e.Last
	}
}

func sumCounts(es []AuditEntry) int64 {
	var n int64
	for _, e := range es {
		n += e.Count
	}
	return n
}
