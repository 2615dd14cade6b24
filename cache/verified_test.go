package cache

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/berth-registry/berth/pkg/oci"
)

// Verified returns once the bytes match the digest, while the commit
// (fsync, link, index) is still under way; Done waits for the commit.
// A prefetch waits on Verified, so its worker is free for the next blob
// during the fsync.
func TestVerifiedReturnsBeforeTheCommit(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	syncing, release := make(chan struct{}), make(chan struct{})
	s.beforeSync = func() {
		close(syncing)
		<-release
	}
	src := newGated(data)
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pw := <-src.pw
	go func() { pw.Write(data); pw.Close() }()
	<-syncing
	verified := make(chan error, 1)
	go func() { verified <- b.Verified() }()
	select {
	case err := <-verified:
		if err != nil {
			close(release)
			t.Fatalf("Verified: %v", err)
		}
	case <-time.After(30 * time.Second):
		close(release)
		t.Fatal("Verified waited for the commit")
	}
	done := make(chan error, 1)
	go func() { done <- b.Done() }()
	select {
	case err := <-done:
		close(release)
		t.Fatalf("Done returned before the commit ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Done: %v", err)
	}
	assertStored(t, s, d, data)
}

// Verified reports a fill whose bytes fail the digest.
func TestVerifiedFailsOnWrongBytes(t *testing.T) {
	s := openStore(t)
	data, d := randomBlob(t, 1<<20)
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	src := newGated(bad)
	b, err := s.Fill(t.Context(), d, FillMeta{}, src.open)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pw := <-src.pw
	go func() { pw.Write(bad); pw.Close() }()
	if err := b.Verified(); !errors.Is(err, oci.ErrDigestMismatch) {
		t.Fatalf("Verified of wrong bytes: %v, want a digest mismatch", err)
	}
	waitNoFills(t, s)
	if s.Has(d) {
		t.Fatal("wrong bytes were stored")
	}
}
