package cache

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
)

func TestAuditCountsPerRepositoryAndSurvivesRestart(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	app := oci.Repo{Registry: "docker.io", Name: "library/app"}
	other := oci.Repo{Registry: "quay.io", Name: "x/y"}
	md, bd := digest.FromString("manifest"), digest.FromString("layer")
	for range 3 {
		s.RecordManifest(app, "v1", md)
		s.RecordManifest(app, "", md)
		s.RecordBlob(app, bd)
	}
	s.RecordManifest(other, "", md)
	if _, err := ReadAudit(root, 100*time.Millisecond); err == nil {
		t.Fatal("read the index of a store another handle holds")
	}
	got, err := s.Audit()
	if err != nil {
		t.Fatal(err)
	}
	s.RecordManifest(app, "v2", md) // after a flush: counts again
	s.Close()

	got, err = ReadAudit(root, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d repositories: %+v", len(got), got)
	}
	a, o := got[0], got[1]
	if a.Name != "library/app" || a.Pulls != 4 || len(a.Tags) != 2 || len(a.Manifests) != 1 || len(a.Blobs) != 1 {
		t.Fatalf("app: %s", dump(a))
	}
	if a.Manifests[0].Count != 3 || a.Blobs[0].Count != 3 || a.Blobs[0].Digest != bd {
		t.Fatalf("app counts: %s", dump(a))
	}
	for _, tag := range a.Tags {
		if want := map[string]int64{"v1": 3, "v2": 1}[tag.Tag]; tag.Count != want || tag.Digest != md {
			t.Fatalf("tag %s: %s", tag.Tag, dump(a))
		}
	}
	if a.First.IsZero() || a.Last.Before(a.First) {
		t.Fatalf("times: %s", dump(a))
	}
	if o.Registry != "quay.io" || o.Pulls != 1 {
		t.Fatalf("other: %s", dump(o))
	}
}

func TestNoTrackingRecordsNothing(t *testing.T) {
	s, err := Open(t.TempDir(), Options{NoTracking: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data, d := randomBlob(t, 10)
	s.Put(d, "", data)
	f, _, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	s.RecordBlob(oci.Repo{Registry: "r", Name: "n"}, d)
	if _, ok := s.acc.m.Load(d); ok {
		t.Fatal("access noted")
	}
	if got, _ := s.Audit(); len(got) != 0 {
		t.Fatalf("audit: %+v", got)
	}
}

func dump(v any) string { b, _ := json.Marshal(v); return string(b) }

// putJSON stores v as content and returns its digest.
func putJSON(t *testing.T, s *Store, v any) digest.Digest {
	t.Helper()
	b, _ := json.Marshal(v)
	d := digest.FromBytes(b)
	if err := s.Put(d, "application/json", b); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestGCRemovesUnreferencedAndUnused(t *testing.T) {
	s := openStore(t)
	put := func(n int) digest.Digest {
		data, d := randomBlob(t, n)
		if err := s.Put(d, "", data); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer, config, stray, recent, pinned := put(100), put(50), put(70), put(30), put(20)
	desc := func(d digest.Digest) map[string]any { return map[string]any{"digest": d, "size": 1} }
	man := putJSON(t, s, map[string]any{"schemaVersion": 2, "config": desc(config), "layers": []any{desc(layer)}})
	index := putJSON(t, s, map[string]any{"schemaVersion": 2, "manifests": []any{desc(man)}})
	oldMan := putJSON(t, s, map[string]any{"schemaVersion": 2, "layers": []any{desc(stray)}}) // no tag
	if err := s.SetTag(TagKey("r", "app", "v1"), Tag{Digest: index}); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(pinned); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	for _, d := range []digest.Digest{layer, config, stray, pinned, man, index, oldMan} {
		info, _ := s.Info(d)
		info.Access = old
		if err := s.putInfo(info); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.GC(t.Context(), GCOptions{MinAge: time.Hour, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := map[digest.Digest]bool{stray: true, oldMan: true}; len(rep.Removed) != 2 || !want[rep.Removed[0]] || !want[rep.Removed[1]] {
		t.Fatalf("dry run would remove %v, want %s and %s", rep.Removed, stray, oldMan)
	}
	if !s.Has(stray) {
		t.Fatal("dry run removed content")
	}
	rep, err = s.GC(t.Context(), GCOptions{MinAge: time.Hour})
	if err != nil || len(rep.Removed) != 2 || rep.Bytes == 0 {
		t.Fatalf("gc: %+v %v", rep, err)
	}
	for d, want := range map[digest.Digest]bool{layer: true, config: true, man: true, index: true, recent: true, pinned: true, stray: false, oldMan: false} {
		if s.Has(d) != want {
			t.Errorf("%s stored %v, want %v", d, s.Has(d), want)
		}
	}
	if rep.Referenced != 4+1 { // the tag's tree, and the pinned blob
		t.Errorf("referenced %d: %s", rep.Referenced, fmt.Sprint(rep))
	}
}

// TestAuditBounded: a flood of junk repository names neither grows memory
// past its bound between flushes nor the index past cache.auditMaxRepos,
// and the repositories kept are the most served.
func TestAuditBounded(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root, Options{AuditMaxRepos: 100, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	busy := oci.Repo{Registry: "docker.io", Name: "library/busy"}
	d := digest.FromString("layer")
	for range 50 {
		s.RecordBlob(busy, d)
	}
	for round := range 3 {
		for i := range 2000 {
			s.RecordBlob(oci.Repo{Registry: "docker.io", Name: fmt.Sprintf("junk/%d-%d", round, i)}, d)
		}
		if _, err := s.Audit(); err != nil { // a flush
			t.Fatal(err)
		}
	}
	for i := range maxPendingAudit + 10 {
		s.RecordBlob(oci.Repo{Registry: "docker.io", Name: fmt.Sprintf("more/%d", i)}, d)
	}
	s.aud.mu.Lock()
	pending, dropped := len(s.aud.m), s.aud.dropped
	s.aud.mu.Unlock()
	if pending > maxPendingAudit || dropped != 10 {
		t.Errorf("%d records pending (bound %d), %d dropped, want 10", pending, maxPendingAudit, dropped)
	}
	s.Close()
	got, err := ReadAudit(root, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) > 100 {
		t.Fatalf("%d repositories in the index, bound 100", len(got))
	}
	found := false
	for _, r := range got {
		found = found || r.Name == busy.Name
	}
	if !found {
		t.Fatalf("the most served repository was dropped; kept %d others", len(got))
	}
	// Reopened, the bound still holds: the counts are read back.
	s, err = Open(root, Options{AuditMaxRepos: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 500 {
		s.RecordBlob(oci.Repo{Registry: "docker.io", Name: fmt.Sprintf("late/%d", i)}, d)
	}
	if got, err = s.Audit(); err != nil || len(got) > 100 {
		t.Fatalf("after reopening: %d repositories, %v", len(got), err)
	}
}
