package cache

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-registry/berth/pkg/oci"
	"github.com/opencontainers/go-digest"
	bolt "go.etcd.io/bbolt"
)

// FuzzIndexCodec feeds the index's readers whatever bytes a damaged or
// hand-edited index.db could hold under its keys: tag records, blob
// records and audit records. Nothing may panic; a damaged audit record is
// skipped, never listed as a repository; and what berth writes itself
// reads back as written.
func FuzzIndexCodec(f *testing.F) {
	good, _ := json.Marshal(auditRecord{Count: 3})
	info, _ := json.Marshal(Info{Size: 10, MediaType: "application/json"})
	for _, s := range []struct{ key, value string }{
		{"docker.io\x00library/a\x00m\x00v1\x00" + string(digest.FromString("x")), string(good)},
		{"docker.io\x00a\x00b\x00\x00sha256:zz", `{"count":-1}`},
		{"\x00\x00\x00\x00", "{"},
		{"r\x00n\x00m\x00t", "null"},
		{"sha256:" + strings.Repeat("a", 64), string(info)},
		{"r/n:v1", `{"digest":"sha256:bad","size":-5}`},
	} {
		f.Add([]byte(s.key), []byte(s.value))
	}
	s, err := Open(f.TempDir(), Options{FlushInterval: 1 << 40})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, key, value []byte) {
		if len(key) == 0 || len(key) > bolt.MaxKeySize {
			return
		}
		err := s.db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketAudit, bucketTags, bucketBlobs} {
				if err := tx.Bucket(b).Put(key, value); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		defer s.db.Update(func(tx *bolt.Tx) error {
			for _, b := range [][]byte{bucketAudit, bucketTags, bucketBlobs} {
				_ = tx.Bucket(b).Delete(key)
			}
			return nil
		})
		repos, err := s.Audit()
		if err != nil {
			t.Fatalf("audit over a damaged record: %v", err)
		}
		for _, r := range repos {
			if strings.ContainsRune(r.Registry, 0) || strings.ContainsRune(r.Name, 0) {
				t.Fatalf("audit repository with a NUL: %q %q", r.Registry, r.Name)
			}
		}
		// Readers of a damaged record answer (an error or a value; the
		// in-memory cache may hold an earlier one) without panicking.
		_, _ = s.Tag(string(key))
		if d, err := digest.Parse(string(key)); err == nil {
			_, _ = s.Info(d)
		}
		// What berth writes reads back as written.
		repo := oci.Repo{Registry: "r.example", Name: strings.ToValidUTF8(strings.ReplaceAll(string(value), "\x00", ""), "")}
		if repo.Name == "" {
			return
		}
		tag := strings.ReplaceAll(string(key), "\x00", "")
		md := digest.FromBytes(value)
		if got := repoPrefix(auditKey(repo, kindManifest, tag, md)); got != repo.Registry+"\x00"+repo.Name+"\x00" {
			t.Fatalf("repoPrefix %q", got)
		}
		s.RecordManifest(repo, tag, md)
		repos, err = s.Audit()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range repos {
			for _, e := range append(r.Tags, r.Manifests...) {
				found = found || r.Name == repo.Name && e.Tag == tag && e.Digest == md
			}
		}
		if !found {
			t.Fatalf("recorded %q %q %s, not read back", repo.Name, tag, md)
		}
		_ = s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketAudit).Delete([]byte(auditKey(repo, kindManifest, tag, md)))
		})
		s.aud.repos = nil
	})
}
