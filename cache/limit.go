package cache

import "syscall"

// fillLimit is the most bytes a fill may take. With the size a descriptor
// names (sized), that size binds every source. Otherwise it binds only a
// stream that declares no size (an upstream body without Content-Length),
// which could else grow without end: the store's quota, or with none the
// size of the filesystem the store is on (no blob larger can be kept).
// A source that declares its size is held to that size instead; one larger
// than the quota passes through (quota.go). Past the limit a fill fails
// with oci.ErrTooLarge.
func (s *Store) fillLimit(meta FillMeta) (limit int64, why string, sized bool) {
	switch {
	case meta.Size > 0:
		return meta.Size, "the size its descriptor names", true
	case s.opts.MaxBytes > 0:
		return s.opts.MaxBytes, "the store quota", false
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.root, &st); err == nil && st.Blocks > 0 {
		return int64(st.Blocks) * int64(st.Bsize), "the store's filesystem size", false
	}
	return 0, "", false
}
