package main

import (
	"crypto/rand"
	"strings"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/opencontainers/go-digest"
)

// putStray commits an unreferenced blob into the store at dir.
func putStray(t *testing.T, dir string) digest.Digest {
	t.Helper()
	s, err := cache.Open(dir, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := make([]byte, 100)
	rand.Read(data)
	d := digest.FromBytes(data)
	if err := s.Put(d, "", data); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestGCMinAgeZeroRemovesNow(t *testing.T) {
	dir := t.TempDir()
	d := putStray(t, dir)
	out, _, err := run(t, "gc", "--cache-dir", dir)
	if err != nil || strings.Contains(out, d.String()) {
		t.Fatalf("gc with the default min age removed fresh content: %q %v", out, err)
	}
	out, _, err = run(t, "gc", "--cache-dir", dir, "--min-age", "0s")
	if err != nil || !strings.Contains(out, "removed "+d.String()) {
		t.Fatalf("gc --min-age 0s: %q %v", out, err)
	}
}
