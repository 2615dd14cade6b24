package cache

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// The audit record: what this node served, per registry and repository.
// A record adds to a count in memory under one short lock (no write
// transaction); flush adds the counts to bbolt with the access times.
//
//	audit/  <registry> 0 <name> 0 <kind> 0 <tag> 0 <digest>  → auditRecord
//
// kind is "m" (a manifest; tag is the tag it was asked by, or empty when
// asked by digest) or "b" (a blob; tag empty).
//
// Both parts are bounded whatever names clients send: memory holds at most
// maxPendingAudit keys between flushes (more are dropped and the drop is
// logged), and the index keeps at most Options.AuditMaxRepos repositories,
// dropping the least served (then least recently served) ones past it.

var bucketAudit = []byte("audit")

const (
	kindManifest = "m"
	kindBlob     = "b"
)

// maxPendingAudit bounds the distinct records gathered between flushes.
const maxPendingAudit = 20000

type auditRecord struct {
	Count int64     `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

type auditDelta struct {
	count, first, last int64 // first and last in unix nanoseconds
}

// auditLog gathers audit counts between flushes.
type auditLog struct {
	mu      sync.Mutex
	m       map[string]*auditDelta // guarded by mu; swapped out by each flush
	dropped int64                  // guarded by mu: records past maxPendingAudit since the last flush

	reposMu sync.Mutex            // one flush at a time; guards repos
	repos   map[string]repoServed // registry 0 name 0 → what the index holds of it; nil until loaded
}

// repoServed sums a repository's records in the index, for choosing which
// repositories to drop past the bound.
type repoServed struct {
	count  int64
	last   int64 // unix nanoseconds
	stored bool  // the index has records of it
}

// add counts one record of the key appendAuditKey makes of its
// arguments. The key is built on the stack: only a record not seen since
// the last flush allocates it.
func (a *auditLog) add(repo oci.Repo, kind, tag string, d digest.Digest) {
	var buf [192]byte
	key := appendAuditKey(buf[:0], repo, kind, tag, d)
	now := time.Now().UnixNano()
	a.mu.Lock()
	defer a.mu.Unlock()
	dl, ok := a.m[string(key)]
	if !ok {
		if len(a.m) >= maxPendingAudit {
			a.dropped++
			return
		}
		if a.m == nil {
			a.m = map[string]*auditDelta{}
		}
		dl = &auditDelta{first: now}
		a.m[string(key)] = dl
	}
	dl.last = now
	dl.count++
}

// take returns the counts gathered since the last take, and how many
// records were dropped meanwhile.
func (a *auditLog) take() (map[string]*auditDelta, int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, dropped := a.m, a.dropped
	a.m, a.dropped = nil, 0
	return m, dropped
}

// putBack returns counts a failed flush could not write.
func (a *auditLog) putBack(m map[string]*auditDelta) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[string]*auditDelta{}
	}
	for k, v := range m {
		if cur, ok := a.m[k]; ok {
			cur.count += v.count
			cur.first = min(cur.first, v.first)
			cur.last = max(cur.last, v.last)
		} else if len(a.m) < maxPendingAudit {
			a.m[k] = v
		}
	}
}

func auditKey(repo oci.Repo, kind, tag string, d digest.Digest) string {
	return string(appendAuditKey(nil, repo, kind, tag, d))
}

// appendAuditKey appends the audit key of a record to b: registry 0 name
// 0 kind 0 tag 0 digest.
func appendAuditKey(b []byte, repo oci.Repo, kind, tag string, d digest.Digest) []byte {
	for _, part := range [...]string{repo.Registry, repo.Name, kind, tag} {
		b = append(append(b, part...), 0)
	}
	return append(b, d...)
}

// repoPrefix is the start of every audit key of the repository a key
// belongs to: registry 0 name 0.
func repoPrefix(key string) string {
	i := strings.IndexByte(key, 0)
	if i < 0 {
		return key
	}
	j := strings.IndexByte(key[i+1:], 0)
	if j < 0 {
		return key
	}
	return key[:i+1+j+1]
}

// RecordManifest notes that a client was served manifest d of repo, asked
// for by tag (or by digest when tag is ""). Call it only once the answer
// is known to be a success. It takes one short lock and writes nothing;
// the count reaches the index with the next flush.
func (s *Store) RecordManifest(repo oci.Repo, tag string, d digest.Digest) {
	if !s.opts.NoTracking {
		s.aud.add(repo, kindManifest, tag, d)
	}
}

// RecordBlob notes that a client was served blob d of repo, like
// RecordManifest.
func (s *Store) RecordBlob(repo oci.Repo, d digest.Digest) {
	if !s.opts.NoTracking {
		s.aud.add(repo, kindBlob, "", d)
	}
}

// flushAudit adds the counts gathered since the last flush to the index,
// keeping at most Options.AuditMaxRepos repositories: past it the least
// served are dropped, and records of a repository dropped in the same
// flush are never written.
func (s *Store) flushAudit() error {
	s.aud.reposMu.Lock()
	defer s.aud.reposMu.Unlock()
	batch, dropped := s.aud.take()
	if dropped > 0 {
		s.log.Warn("audit record: too many distinct records between flushes; some were not recorded", "dropped", dropped, "bound", maxPendingAudit)
	}
	if len(batch) == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if s.aud.repos == nil {
			s.aud.repos = loadRepoServed(b)
		}
		for key, p := range batch {
			rp := repoPrefix(key)
			rs := s.aud.repos[rp]
			rs.count += p.count
			rs.last = max(rs.last, p.last)
			s.aud.repos[rp] = rs
		}
		victims := s.auditVictims()
		for key, p := range batch {
			if victims[repoPrefix(key)] {
				continue
			}
			if err := putAudit(b, key, p); err != nil {
				return err
			}
			rs := s.aud.repos[repoPrefix(key)]
			rs.stored = true
			s.aud.repos[repoPrefix(key)] = rs
		}
		return s.dropAudit(b, victims)
	})
	if err != nil {
		s.aud.repos = nil // reload from the index next time
		s.aud.putBack(batch)
	}
	return err
}

func putAudit(b *bolt.Bucket, key string, p *auditDelta) error {
	var rec auditRecord
	if v := b.Get([]byte(key)); v != nil {
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
	return b.Put([]byte(key), v)
}

// loadRepoServed sums the index's audit records per repository.
func loadRepoServed(b *bolt.Bucket) map[string]repoServed {
	repos := map[string]repoServed{}
	_ = b.ForEach(func(k, v []byte) error {
		var rec auditRecord
		if json.Unmarshal(v, &rec) != nil {
			return nil
		}
		rp := repoPrefix(string(k))
		rs := repos[rp]
		rs.count += rec.Count
		rs.last = max(rs.last, rec.Last.UnixNano())
		rs.stored = true
		repos[rp] = rs
		return nil
	})
	return repos
}

// auditVictims picks the repositories to drop when there are more than
// the bound: the least served (ties: least recently served) until a tenth
// under it, so a flood of new names costs one sort per many flushes.
func (s *Store) auditVictims() map[string]bool {
	limit := s.opts.AuditMaxRepos
	if limit <= 0 || len(s.aud.repos) <= limit {
		return nil
	}
	type served struct {
		prefix string
		repoServed
	}
	all := make([]served, 0, len(s.aud.repos))
	for p, rs := range s.aud.repos {
		all = append(all, served{p, rs})
	}
	slices.SortFunc(all, func(a, b served) int {
		if c := cmp.Compare(a.count, b.count); c != 0 {
			return c
		}
		return cmp.Compare(a.last, b.last)
	})
	victims := map[string]bool{}
	for _, r := range all[:len(all)-limit*9/10] {
		victims[r.prefix] = true
	}
	return victims
}

// dropAudit removes the victims' records from b and from the sums.
func (s *Store) dropAudit(b *bolt.Bucket, victims map[string]bool) error {
	for prefix := range victims {
		if s.aud.repos[prefix].stored {
			c := b.Cursor()
			var keys [][]byte
			for k, _ := c.Seek([]byte(prefix)); k != nil && bytes.HasPrefix(k, []byte(prefix)); k, _ = c.Next() {
				keys = append(keys, bytes.Clone(k))
			}
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		delete(s.aud.repos, prefix)
	}
	if len(victims) > 0 {
		s.log.Info("audit record: dropped the least served repositories", "dropped", len(victims), "bound", s.opts.AuditMaxRepos)
	}
	return nil
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
