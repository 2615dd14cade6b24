package cache

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

func TestKnownPersistsPerRepository(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	private := oci.Repo{Registry: "private.test", Name: "team/app"}
	public := oci.Repo{Registry: "docker.io", Name: "library/alpine"}
	d1, d2 := digest.FromString("one"), digest.FromString("two")
	if s.Known(private, d1) {
		t.Fatal("known before any mark")
	}
	if err := s.MarkKnown(private, d1, "", d2); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkKnown(private, d1); err != nil { // again: a memory hit, no write
		t.Fatal(err)
	}
	if !s.Known(private, d1) || !s.Known(private, d2) {
		t.Fatal("not known after MarkKnown")
	}
	for _, r := range []oci.Repo{public, {Registry: "private.test", Name: "team"}, {Registry: "private.test", Name: "team/app/x"}, {Registry: "other.test", Name: "team/app"}} {
		if s.Known(r, d1) {
			t.Errorf("%s: known through another repository's mark", r)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Known(private, d2) || s.Known(public, d2) {
		t.Error("marks not kept across a restart, or kept for the wrong repository")
	}
	repos, err := s.KnownRepos(d1)
	if err != nil || !slices.Equal(repos, []string{"private.test/team/app"}) {
		t.Errorf("KnownRepos = %v, %v", repos, err)
	}
}

// TestKnownSeededOnUpgrade: a store from before known/ existed knows, once
// opened, each cached tag's manifest and what it names, so a site that is
// offline after the upgrade still serves what it served before.
func TestKnownSeededOnUpgrade(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	layer, cfg := digest.FromString("layer"), digest.FromString("config")
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
		`"config":{"digest":"` + cfg.String() + `","size":6},"layers":[{"digest":"` + layer.String() + `","size":5}]}`)
	md := digest.FromBytes(man)
	if err := s.Put(md, "application/vnd.oci.image.manifest.v1+json", man); err != nil {
		t.Fatal(err)
	}
	repo := oci.Repo{Registry: "private.test", Name: "team/app"}
	if err := s.SetTag(TagKey(repo.Registry, repo.Name, "v1"), Tag{Digest: md, Size: int64(len(man))}); err != nil {
		t.Fatal(err)
	}
	if s.Known(repo, md) {
		t.Fatal("a tag set by the mirror made its digest known: only repo's sources vouch")
	}
	s.Close()
	// The store as an older berth left it: no known/ bucket.
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketKnown) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range []digest.Digest{md, cfg, layer} {
		if !s.Known(repo, d) {
			t.Errorf("%s not known after the upgrade", d)
		}
		if s.Known(oci.Repo{Registry: "docker.io", Name: "library/alpine"}, d) {
			t.Errorf("%s known for another repository", d)
		}
	}
}

// TestKnownPrunedWithTheContent: removing a blob (gc here; eviction and bad
// files take the same path) deletes its known/ pairs for every repository
// in the same transaction, in memory and in the index; pairs of content
// that was never stored (a layer a manifest names) stay.
func TestKnownPrunedWithTheContent(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := oci.Repo{Registry: "private.test", Name: "team/app"}
	b := oci.Repo{Registry: "docker.io", Name: "library/alpine"}
	d1, d2, named := digest.FromString("one"), digest.FromString("two"), digest.FromString("named, not stored")
	for _, d := range []digest.Digest{d1, d2} {
		if err := s.Put(d, "application/octet-stream", []byte(map[digest.Digest]string{d1: "one", d2: "two"}[d])); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkKnown(a, d1, d2, named); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkKnown(b, d1); err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(t.Context(), GCOptions{}) // no tags: both blobs go
	if err != nil || len(rep.Removed) != 2 || s.Has(d1) || s.Has(d2) {
		t.Fatalf("gc: %+v, %v", rep, err)
	}
	check := func(when string) {
		t.Helper()
		for _, p := range []struct {
			repo oci.Repo
			d    digest.Digest
		}{{a, d1}, {b, d1}, {a, d2}} {
			if s.Known(p.repo, p.d) {
				t.Errorf("%s: %s still known for %s after its removal", when, p.d, p.repo)
			}
		}
		if !s.Known(a, named) {
			t.Errorf("%s: a pair of content never stored was pruned", when)
		}
		if repos, err := s.KnownRepos(d1); err != nil || len(repos) != 0 {
			t.Errorf("%s: KnownRepos(removed) = %v, %v", when, repos, err)
		}
	}
	check("in memory")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check("after a restart")
}

// TestKnownSizeFromMemory: the size a descriptor gave a pair is read from
// memory once known (a blob miss opens no bbolt transaction), from the
// index after a restart, stays the first one recorded, and goes with the
// content.
func TestKnownSizeFromMemory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	repo := oci.Repo{Registry: "r.test", Name: "team/app"}
	d, unsized := digest.FromString("sized"), digest.FromString("unsized")
	if err := s.markKnown(repo, []digest.Digest{d, unsized}, map[digest.Digest]int64{d: 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.markKnown(repo, []digest.Digest{d}, map[digest.Digest]int64{d: 9}); err != nil { // a later manifest's
		t.Fatal(err)
	}
	txs := s.db.Stats().TxN
	for range 100 {
		if n, u := s.KnownSize(repo, d), s.KnownSize(repo, unsized); n != 5 || u != 0 {
			t.Fatalf("KnownSize %d and %d, want 5 and 0", n, u)
		}
	}
	if got := s.db.Stats().TxN - txs; got != 0 {
		t.Errorf("200 KnownSize calls on known pairs opened %d read transactions, want 0", got)
	}
	s.Close()
	if s, err = Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if n := s.KnownSize(repo, d); n != 5 || !s.Known(repo, d) {
		t.Fatalf("after a restart: KnownSize %d, want 5", n)
	}
	if err := s.Put(d, "application/octet-stream", []byte("sized")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(t.Context(), GCOptions{}); err != nil || s.Has(d) {
		t.Fatalf("gc: %v", err)
	}
	if n := s.KnownSize(repo, d); n != 0 {
		t.Errorf("KnownSize %d after the content went, want 0", n)
	}
	s.Close()
}
