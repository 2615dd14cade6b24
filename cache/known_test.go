package cache

import (
	"slices"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
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
