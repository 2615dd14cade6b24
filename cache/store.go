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
	"time"

	"github.com/berth-registry/berth/pkg/metrics"
	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// ErrNotFound means the store does not hold the content.
var ErrNotFound = errors.New("not in the store")

// Options tunes a Store. The zero value is ready to use.
type Options struct {
	Logger        *slog.Logger     // nil discards
	Metrics       *metrics.Metrics // nil counts nothing
	FillTimeout   time.Duration    // bound on one fill; 0 means 30m
	MaxAttempts   int              // source attempts in a row without progress; 0 means 4
	FlushInterval time.Duration    // how often access times reach bbolt; 0 means 10s
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

	ctx    context.Context // parent of every fill; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // fills and the flusher

	mu    sync.Mutex              // guards fills
	fills map[digest.Digest]*fill // fills under way, removed once committed or failed
}

// Open opens (creating if needed) the store at root, removes temp files a
// previous process left, and reconciles the index with the files.
func Open(root string, opts Options) (*Store, error) {
	if opts.FillTimeout <= 0 {
		opts.FillTimeout = 30 * time.Minute
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 4
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
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
		fills: map[digest.Digest]*fill{},
	}
	if err := s.reconcile(); err != nil {
		cancel()
		db.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.flushLoop()
	return s, nil
}

// Close stops every fill under way, flushes access times and closes the
// index. Readers of fills see an error; committed files stay readable.
func (s *Store) Close() error {
	s.cancel()
	s.wg.Wait()
	s.flushAccess()
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
// The error wraps ErrNotFound when d is not committed.
func (s *Store) Open(d digest.Digest) (*os.File, int64, error) {
	if err := d.Validate(); err != nil {
		return nil, 0, fmt.Errorf("open %q: %w", d, oci.ErrDigestInvalid)
	}
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
	s.acc.touch(d)
	return f, fi.Size(), nil
}

// Has reports whether d is committed, without noting an access.
func (s *Store) Has(d digest.Digest) bool {
	if d.Validate() != nil {
		return false
	}
	_, err := os.Stat(s.BlobPath(d))
	return err == nil
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
