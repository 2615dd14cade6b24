// Package cache is berth's content store: verified blobs on disk, fills in
// flight that many readers stream from while they download, and a bbolt
// index of what the store holds.
//
// On disk:
//
//	<root>/blobs/sha256/<2 hex>/<hex>   committed content: verified, read-only
//	<root>/tmp/                         fills under way; swept at start
//	<root>/index.db                     the bbolt index (see index.go)
//
// Nothing reaches blobs/ before its size and digest have been checked and
// its bytes fsynced, so after a kill -9 only tmp/ needs sweeping and the
// index reconciling with the files.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ErrNotFound means the store does not hold the content.
var ErrNotFound = errors.New("not in the store")

// ErrInUse means another process (a running server) holds the store.
var ErrInUse = errors.New("store in use by another process")

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	Logger      *slog.Logger     // nil discards
	Metrics     *metrics.Metrics // nil counts nothing
	FillTimeout time.Duration    // bound on one fill; 0 means the config default (fillTimeout)
	MaxAttempts int              // source attempts in a row without progress; 0 means 4
	// StallAfter is how long a fill's source may send nothing before the
	// fill moves to a fallback source a joiner brought (FillMeta.Origin);
	// 0 means 10s. A fill without a fallback waits on its source's own
	// timeouts.
	StallAfter time.Duration
	// ProgressInterval is how often a fill under way logs its progress;
	// 0 means 5s.
	ProgressInterval time.Duration
	FlushInterval    time.Duration // how often access times and audit records reach bbolt; 0 means 10s

	MaxBytes      int64   // quota in bytes; 0 means none
	HighWatermark float64 // fraction of MaxBytes above which eviction starts; 0 means the config default (cache.highWatermark)
	LowWatermark  float64 // fraction of MaxBytes eviction brings usage down to; 0 means the config default (cache.lowWatermark)

	// AuditMaxRepos bounds the repositories the audit record keeps in the
	// index: past it the least served are dropped. 0 means no bound.
	AuditMaxRepos int

	// NoTracking records no access times and no audit records: the hit
	// path then does nothing but open the file (benchmarks compare).
	NoTracking bool

	// GCInterval is the period of the background gc; 0 runs none.
	// GCMinAge is how long unreferenced content must go unused before the
	// background gc removes it; 0 means 0 (the config's cache.gcMinAge
	// holds the default).
	GCInterval, GCMinAge time.Duration

	// WriteAt writes fill and Put bytes to their temp file; nil means
	// f.WriteAt. Tests inject disk errors with it.
	WriteAt func(f *os.File, p []byte, off int64) (int, error)
	// PassThroughBuffer is the memory a fill keeps for its readers after
	// its temp file cannot be written (disk full); 0 means 8 MiB.
	PassThroughBuffer int
	// PassThroughWait bounds how long such a fill waits for its slowest
	// reader before dropping it; 0 means 1m.
	PassThroughWait time.Duration
}

func (o *Options) defaults() {
	def := config.Defaults()
	if o.FillTimeout <= 0 {
		o.FillTimeout = def.FillTimeout.D()
	}
	if o.StallAfter <= 0 {
		o.StallAfter = 10 * time.Second
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 4
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = 10 * time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HighWatermark <= 0 || o.HighWatermark > 1 {
		o.HighWatermark = def.Cache.HighWatermark
	}
	if o.LowWatermark <= 0 || o.LowWatermark > o.HighWatermark {
		o.LowWatermark = min(def.Cache.LowWatermark, o.HighWatermark)
	}
	o.GCMinAge = max(0, o.GCMinAge)
	if o.PassThroughBuffer < 1<<20 {
		o.PassThroughBuffer = 8 << 20
	}
	if o.PassThroughWait <= 0 {
		o.PassThroughWait = time.Minute
	}
}

// Store is a content store rooted at one directory. Its methods are safe
// for concurrent use. Only one process may open a root at a time: the bbolt
// file lock enforces it.
type Store struct {
	root string
	opts Options
	log  *slog.Logger
	m    *metrics.Metrics
	db   *bolt.DB
	meta *metaCache
	acc  accessLog
	aud  auditLog

	bytes, blobs atomic.Int64  // committed content; see quota.go
	pending      atomic.Int64  // bytes in temp files of fills under way
	pinnedBytes  atomic.Int64  // size of pinned content, as of the last eviction, gc or pin
	commitMu     sync.RWMutex  // commits hold it shared, removals exclusively
	evictMu      sync.Mutex    // one eviction, gc or pin at a time; guards lastStop
	lastStop     string        // why the last eviction stopped, logged when it changes
	evictCh      chan struct{} // wakes evictLoop; capacity 1

	ctx    context.Context // parent of every fill; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // fills and the flusher

	mu    sync.Mutex              // guards fills and idle
	fills map[digest.Digest]*fill // fills under way, removed once committed or failed
	idle  chan struct{}           // closed when fills turns empty; made by WaitFills, nil when none waits

	beforeSync func() // tests: runs in a commit before the fsync
}

// Open opens (creating if needed) the store at root, removes temp files a
// previous process left, and reconciles the index with the files. It
// re-hashes only files the index does not know (at most the fills a crash
// interrupted), so it takes seconds on a large store. It fails after a few
// seconds when another process holds the store.
func Open(root string, opts Options) (*Store, error) {
	opts.defaults()
	for _, dir := range []string{"blobs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	if err := sweepTmp(filepath.Join(root, "tmp")); err != nil {
		return nil, fmt.Errorf("open store: sweep temp files: %w", err)
	}
	db, err := openIndex(filepath.Join(root, "index.db"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Store{
		root: root, opts: opts, log: opts.Logger, m: opts.Metrics, db: db,
		meta: newMetaCache(), ctx: ctx, cancel: cancel,
		fills: map[digest.Digest]*fill{}, evictCh: make(chan struct{}, 1),
	}
	if err := s.reconcile(); err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	if err := s.seedKnown(); err != nil {
		cancel()
		db.Close()
		return nil, fmt.Errorf("open store: seed known/: %w", err)
	}
	s.refreshPinned()
	s.added(0, 0) // the gauges
	s.wg.Add(2)
	go s.every(s.opts.FlushInterval, s.flush)
	go s.evictLoop()
	if opts.GCInterval > 0 {
		s.wg.Add(1)
		go s.every(s.opts.GCInterval, s.gcOnce)
	}
	s.kickEvict() // a smaller quota than the last run's
	return s, nil
}

// Close stops every fill under way and the background work, flushes
// access times and audit records and closes the index. Readers of fills see an error; committed files stay readable.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	s.flushAccess()
	if err := s.flushAudit(); err != nil {
		s.log.Warn("flush audit record", "err", err)
	}
	return s.db.Close()
}

// Root returns the directory the store lives in.
func (s *Store) Root() string { return s.root }

// BlobPath returns where committed content d lives. d must be valid: a
// digest that parsed cannot name a path outside the root.
func (s *Store) BlobPath(d digest.Digest) string {
	hex := d.Encoded()
	return filepath.Join(s.root, "blobs", d.Algorithm().String(), hex[:2], hex)
}

// Open returns committed content d as a read-only file with its size, and
// notes the access. It never waits on a write lock: this is the hit path.
// Content whose fill is verified and whose commit is under way counts as
// committed: Open returns its file (the inode the commit links). The
// error wraps ErrNotFound when d is not committed.
func (s *Store) Open(d digest.Digest) (*os.File, int64, error) {
	if err := oci.ValidDigest(d); err != nil {
		return nil, 0, fmt.Errorf("open %q: %w", d, oci.ErrDigestInvalid)
	}
	f, size, err := s.openCommitted(d)
	if errors.Is(err, ErrNotFound) {
		if f, size, ok := s.openVerified(d); ok {
			return f, size, nil
		}
	}
	return f, size, err
}

// openCommitted is Open without the look at fills under way, for callers
// that hold s.mu and have looked already.
func (s *Store) openCommitted(d digest.Digest) (*os.File, int64, error) {
	f, err := os.Open(s.BlobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("open %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open %s: %w", d, err)
	}
	if !s.opts.NoTracking {
		s.acc.touch(d)
	}
	return f, fi.Size(), nil
}

// Has reports whether d is committed, without noting an access. A fill
// of d whose bytes are all in and verified counts once its commit ends:
// its readers may have every byte before the commit (fsync, link) does,
// and Has waits for it rather than answer false in between.
func (s *Store) Has(d digest.Digest) bool {
	if oci.ValidDigest(d) != nil {
		return false
	}
	if _, err := os.Stat(s.BlobPath(d)); err == nil {
		return true
	}
	if !s.awaitCommit(d) {
		return false
	}
	_, err := os.Stat(s.BlobPath(d))
	return err == nil
}

// openVerified opens the temp file of a fill of d whose bytes are all in
// and verified, its commit under way: the same inode the commit links
// into place, so a client arriving between the check and the link is
// served the verified file at once, as a hit, rather than wait for the
// fsync. The fill holds its file open while it is registered.
func (s *Store) openVerified(d digest.Digest) (*os.File, int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fl := s.fills[d]
	if fl == nil || fl.file == nil {
		return nil, 0, false
	}
	st := fl.state()
	if !st.verified || st.pt != nil || st.err != nil {
		return nil, 0, false
	}
	f, err := reopen(fl.file)
	if err != nil {
		return nil, 0, false
	}
	return f, st.written, true
}

// awaitCommit waits for the commit of a verified fill of d, reporting
// whether there was one.
func (s *Store) awaitCommit(d digest.Digest) bool {
	s.mu.Lock()
	f := s.fills[d]
	s.mu.Unlock()
	if f == nil {
		return false
	}
	for {
		st := f.state()
		if !st.verified {
			return false
		}
		if st.done {
			return true
		}
		select {
		case <-st.wake:
		case <-s.ctx.Done():
			return false
		}
	}
}

func sweepTmp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
