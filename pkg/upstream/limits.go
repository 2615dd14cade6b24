package upstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	lru "github.com/hashicorp/golang-lru/v2"
)

// fetchLimit bounds the upstream requests under way at once, over every
// registry, with a bounded queue of requests waiting for a slot. A slot is
// held from the request until its body is closed, so a blob being
// downloaded counts for as long as it downloads. A nil *fetchLimit bounds
// nothing.
type fetchLimit struct {
	slots     chan struct{}
	queued    atomic.Int64
	maxQueued int64
}

func newFetchLimit(concurrent, queued int) *fetchLimit {
	if concurrent <= 0 {
		return nil
	}
	return &fetchLimit{slots: make(chan struct{}, concurrent), maxQueued: int64(queued)}
}

// errQueueFull says the queue of upstream requests is full: the client
// should come back later (429 TOOMANYREQUESTS).
var errQueueFull = fmt.Errorf("berth has too many upstream requests waiting; retry later: %w", oci.ErrTooManyRequests)

// acquire takes a slot, waiting in the queue while ctx lasts, and returns
// the function that gives it back (safe to call more than once). A full
// queue fails at once with errQueueFull.
func (l *fetchLimit) acquire(ctx context.Context) (release func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	select {
	case l.slots <- struct{}{}:
		return l.releaser(), nil
	default:
	}
	if l.queued.Add(1) > l.maxQueued {
		l.queued.Add(-1)
		return nil, errQueueFull
	}
	defer l.queued.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return l.releaser(), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (l *fetchLimit) releaser() func() {
	var once sync.Once
	return func() { once.Do(func() { <-l.slots }) }
}

// notFoundCache remembers an upstream's "not found" for a repository's
// manifest or blob for a short time, so a flood of requests for content
// that does not exist reaches the upstream once per name and TTL, not once
// per request. It is bounded in size (least recently used out) and takes
// no goroutine: an entry past its TTL is dropped when it is looked up. A
// nil *notFoundCache remembers nothing.
type notFoundCache struct {
	ttl     time.Duration
	entries *lru.Cache[string, notFound]
}

type notFound struct {
	err     error
	expires time.Time
}

// notFoundEntries bounds the answers remembered.
const notFoundEntries = 10000

func newNotFoundCache(ttl time.Duration) *notFoundCache {
	if ttl <= 0 {
		return nil
	}
	c, _ := lru.New[string, notFound](notFoundEntries) // fails only for a size under 1
	return &notFoundCache{ttl: ttl, entries: c}
}

func notFoundKey(repo oci.Repo, kind, ref string) string {
	return strings.Join([]string{repo.Registry, repo.Name, kind, ref}, "\x00")
}

// get returns the remembered error for key, or nil.
func (c *notFoundCache) get(key string) error {
	if c == nil {
		return nil
	}
	e, ok := c.entries.Get(key)
	if !ok {
		return nil
	}
	if time.Now().After(e.expires) {
		c.entries.Remove(key)
		return nil
	}
	return e.err
}

// note remembers err for key if it says the content is not there.
func (c *notFoundCache) note(key string, err error) {
	if c == nil || err == nil {
		return
	}
	if errors.Is(err, oci.ErrBlobUnknown) || errors.Is(err, oci.ErrManifestUnknown) || errors.Is(err, oci.ErrNameUnknown) {
		c.entries.Add(key, notFound{err: err, expires: time.Now().Add(c.ttl)})
	}
}
