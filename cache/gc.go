package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

// GCOptions tunes one gc run.
type GCOptions struct {
	// MinAge is how long unreferenced content must have gone unused to
	// be removed. 0 means 0: every unreferenced blob goes. A negative
	// MinAge is an error.
	MinAge time.Duration
	DryRun bool // report only
}

// GCReport says what a gc run found.
type GCReport struct {
	Referenced int             `json:"referenced"` // content reachable from a cached tag or a pin
	Pinned     int             `json:"pinned"`     // of which a pin reaches
	Removed    []digest.Digest `json:"removed"`    // removed (or, with DryRun, to be removed)
	Bytes      int64           `json:"bytes"`      // their size
	DryRun     bool            `json:"dryRun"`
}

// GC removes content that no cached tag's manifest tree references (an
// index, its manifests, their configs and layers, and their referrers),
// that no pin reaches, and that nobody used for MinAge. Fills under way
// are left alone. GC may run while the store serves; it runs one at a time
// with eviction and pinning.
func (s *Store) GC(ctx context.Context, o GCOptions) (GCReport, error) {
	if o.MinAge < 0 {
		return GCReport{}, fmt.Errorf("gc: negative minimum age %s", o.MinAge)
	}
	s.flushAccess()
	s.evictMu.Lock()
	defer s.evictMu.Unlock()
	sc, err := s.scan()
	if err != nil {
		return GCReport{}, fmt.Errorf("gc: %w", err)
	}
	ref := sc.pinned(s)
	s.notePinned(sc, ref)
	pinned := len(ref)
	for _, t := range sc.tags {
		if err := ctx.Err(); err != nil {
			return GCReport{}, err
		}
		sc.mark(s, t.Digest, ref, nil, 0)
	}
	rep := GCReport{Pinned: pinned, DryRun: o.DryRun}
	cutoff := time.Now().Add(-o.MinAge)
	for d, info := range sc.infos {
		if ref[d] {
			rep.Referenced++
			continue
		}
		if !s.lastAccess(d, info.Access).Before(cutoff) {
			continue
		}
		rep.Removed = append(rep.Removed, d)
		rep.Bytes += info.Size
	}
	if o.DryRun || len(rep.Removed) == 0 {
		return rep, nil
	}
	st, err := s.remove(rep.Removed, false, ref)
	if err != nil {
		return rep, fmt.Errorf("gc: %w", err)
	}
	rep.Bytes = st.Bytes
	return rep, nil
}

// leaves are the config and layers (blobs) a manifest names.
func leaves(m *oci.Manifest) []digest.Digest {
	descs := m.BlobDescriptors()
	out := make([]digest.Digest, len(descs))
	for i, d := range descs {
		out[i] = d.Digest
	}
	return out
}

// readRefs reads stored content d as a manifest. ok is false for content
// that is no manifest (a layer, a config) or cannot be read.
func (s *Store) readRefs(d digest.Digest, info Info) (oci.Manifest, bool) {
	if info.Size > oci.MaxManifestSize || info.Size < 2 {
		return oci.Manifest{}, false
	}
	f, err := os.Open(s.BlobPath(d))
	if err != nil {
		return oci.Manifest{}, false
	}
	defer f.Close()
	var first [1]byte // a layer is no JSON: one byte tells, before reading it all
	if _, err := f.ReadAt(first[:], 0); err != nil || !bytes.ContainsAny(first[:], "{ \t\r\n") {
		return oci.Manifest{}, false
	}
	data, err := io.ReadAll(io.LimitReader(f, oci.MaxManifestSize))
	if err != nil {
		return oci.Manifest{}, false
	}
	return parseRefs(data)
}

// parseRefs reads data as a manifest or an index: a JSON object with a
// schemaVersion of 2 that names content.
func parseRefs(data []byte) (oci.Manifest, bool) {
	data = bytes.TrimLeft(data, " \t\r\n")
	if len(data) == 0 || data[0] != '{' {
		return oci.Manifest{}, false
	}
	m, err := oci.DecodeManifest(data)
	if err != nil || m.SchemaVersion != 2 || !m.NamesContent() {
		return oci.Manifest{}, false
	}
	return m, true
}

// gcOnce is the periodic gc's run.
func (s *Store) gcOnce() {
	rep, err := s.GC(s.ctx, GCOptions{MinAge: s.opts.GCMinAge})
	s.m.GCDone(rep.Bytes, err)
	if err != nil {
		s.log.Warn("gc", "err", err)
		return
	}
	if len(rep.Removed) > 0 {
		s.log.Info("gc", "removed", len(rep.Removed), "bytes", rep.Bytes, "referenced", rep.Referenced, "pinned", rep.Pinned)
	}
}
