package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// fileDigest returns the sha256 digest of a file's bytes.
func fileDigest(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// checkOCILayout checks an OCI image layout a client wrote: index.json
// names the manifest want.Digest, every blob file hashes to its name, and
// every digest in blobs (plus the manifest) is there.
func checkOCILayout(t testing.TB, dir string, want testImage, blobs []string) {
	t.Helper()
	var idx struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	found := false
	for _, m := range idx.Manifests {
		found = found || m.Digest == want.Digest
	}
	if !found {
		t.Errorf("%s: index.json does not name %s:\n%s", dir, want.Digest, b)
	}
	checkBlobFiles(t, filepath.Join(dir, "blobs", "sha256"), append([]string{want.Digest}, blobs...))
}

// checkBlobFiles checks that each regular file in dir whose name is 64
// hex digits hashes to sha256:<name>, and that each digest in want is one.
func checkBlobFiles(t testing.TB, dir string, want []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range ents {
		if e.IsDir() || len(e.Name()) != 64 {
			continue
		}
		got := fileDigest(t, filepath.Join(dir, e.Name()))
		if got != "sha256:"+e.Name() {
			t.Errorf("%s/%s holds bytes of %s", dir, e.Name(), got)
		}
		have[got] = true
	}
	for _, d := range want {
		if !have[d] {
			t.Errorf("%s lacks blob %s", dir, d)
		}
	}
}

// digestOf returns the sha256 digest of b.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
