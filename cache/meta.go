package cache

import (
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
)

// metaCache keeps hot index values in memory (golang-lru), so manifest and
// tag lookups rarely open a bbolt transaction. It is a read-through cache:
// bbolt stays the truth, and every write goes there first. Lookups Peek,
// which takes the LRU's shared lock only: a hit never waits on a write
// lock. The price is that a hit does not renew an entry's place, so the
// cache evicts in insertion order, and an evicted hot entry costs one bbolt
// read before it is back.
type metaCache struct {
	infos *lru.Cache[digest.Digest, Info]
	tags  *lru.Cache[string, Tag]
	known *lru.Cache[string, int64] // known.go's pairs, positives only, with their KnownSize
	// small committed content by digest (manifests), so a manifest hit
	// reads no file; forget drops an entry with its info, when the
	// content is removed (see ReadAll)
	bytes *lru.Cache[digest.Digest, []byte]
	// manifests whose references MarkManifestKnown marked, by repository
	// (known key): the value is knownGen then; a removal that deletes known
	// pairs moves knownGen on, so every manifest is marked again when next
	// served
	marked   *lru.Cache[string, uint64]
	knownGen atomic.Uint64
}

// Bounds of metaCache.bytes: what it holds is at most
// memoEntries*memoMaxBytes (8 MiB), and about 1 MiB for typical
// manifests of a few KiB.
const (
	memoEntries  = 512
	memoMaxBytes = 16 << 10
)

func newMetaCache() *metaCache {
	infos, _ := lru.New[digest.Digest, Info](8192) // errors only on size <= 0
	tags, _ := lru.New[string, Tag](8192)
	known, _ := lru.New[string, int64](65536)
	bytes, _ := lru.New[digest.Digest, []byte](memoEntries)
	marked, _ := lru.New[string, uint64](8192)
	return &metaCache{infos: infos, tags: tags, known: known, bytes: bytes, marked: marked}
}

func (c *metaCache) info(d digest.Digest) (Info, bool) { return c.infos.Peek(d) }
func (c *metaCache) addInfo(i Info)                    { c.infos.Add(i.Digest, i) }
func (c *metaCache) forget(d digest.Digest)            { c.infos.Remove(d); c.bytes.Remove(d) }
func (c *metaCache) tag(key string) (Tag, bool)        { return c.tags.Peek(key) }
func (c *metaCache) addTag(key string, t Tag)          { c.tags.Add(key, t) }
func (c *metaCache) forgetTag(key string)              { c.tags.Remove(key) }
