package main

import (
	"encoding/csv"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/test/nodetest"
	"github.com/berth-registry/berth/test/upstreamtest"
)

// TestPinLsUnpin: an image pulled through a running node (not pinned by
// preload) is pinned and unpinned through the admin API, and berth ls lists
// it with its size and pin as a table, JSON and CSV; on the stopped store
// the same commands work on the directory, and gc --min-age 0s keeps a
// pinned image whole.
func TestPinLsUnpin(t *testing.T) {
	up := upstreamtest.New(t)
	all := pushIndex(t, up, "site/app", "v1")
	n := nodetest.Start(t, up)
	admin := httptest.NewServer(n.AdminHandler())
	defer admin.Close()
	if out, err := berthRun(t, "preload", "--no-pin", "--addr", n.URL, up.Host+"/site/app:v1"); err != nil {
		t.Fatalf("preload: %v\n%s", err, out)
	}
	n.WaitStored(t) // the last blob's commit may follow its last byte
	ref := up.Host + "/site/app:v1"
	lsJSON := func(args ...string) []cache.ImageEntry {
		t.Helper()
		out, err := berthRun(t, append([]string{"ls", "-o", "json"}, args...)...)
		if err != nil {
			t.Fatalf("ls: %v", err)
		}
		var imgs []cache.ImageEntry
		if err := json.Unmarshal([]byte(out), &imgs); err != nil {
			t.Fatalf("ls -o json: %v\n%s", err, out)
		}
		return imgs
	}
	if imgs := lsJSON("--addr", admin.URL); len(imgs) != 1 || imgs[0].Pinned || imgs[0].Blobs != len(all) || imgs[0].Size == 0 {
		t.Fatalf("ls before pin: %+v", imgs)
	}
	out, err := berthRun(t, "pin", "--addr", admin.URL, ref)
	if err != nil || !strings.Contains(out, "pinned "+ref) {
		t.Fatalf("pin: %v %q", err, out)
	}
	if imgs := lsJSON("--addr", admin.URL); len(imgs) != 1 || !imgs[0].Pinned {
		t.Fatalf("ls after pin: %+v", imgs)
	}
	out, err = berthRun(t, "ls", "--addr", admin.URL, "-o", "csv")
	rows, cerr := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || cerr != nil || len(rows) != 2 || rows[1][2] != "v1" || rows[1][8] != "true" {
		t.Fatalf("ls -o csv: %v %v %q", err, cerr, out)
	}
	if out, err := berthRun(t, "ls", "--addr", admin.URL, "--pinned"); err != nil || !strings.Contains(out, ref) {
		t.Fatalf("ls --pinned: %v %q", err, out)
	}
	if out, err := berthRun(t, "ls", "--addr", admin.URL, "--served", "-o", "csv"); err != nil || !strings.Contains(out, "registry,name,kind") {
		t.Fatalf("ls --served: %v %q", err, out)
	}
	if _, err := berthRun(t, "unpin", "--addr", admin.URL, ref); err != nil {
		t.Fatalf("unpin: %v", err)
	}
	if _, err := berthRun(t, "unpin", "--addr", admin.URL, ref); err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Fatalf("second unpin: %v", err)
	}
	if _, err := berthRun(t, "pin", "--addr", admin.URL, up.Host+"/site/app:nope"); err == nil {
		t.Fatal("pin of an image not stored succeeded")
	}
	if _, err := berthRun(t, "pin", "--addr", admin.URL, "Not A Reference"); err == nil || !strings.Contains(err.Error(), "NAME_INVALID") {
		t.Fatalf("pin of a bad reference: %v", err)
	}

	// The same on the stopped store's directory.
	dir := n.Store().Root()
	n.Close() // releases the store; the harness's own Close later is harmless
	if out, err := berthRun(t, "pin", "--cache-dir", dir, ref); err != nil || !strings.Contains(out, "pinned "+ref) {
		t.Fatalf("pin on the directory: %v %q", err, out)
	}
	// The tag goes (as a tag mapping could be evicted); the pin keeps
	// the image through a gc that removes everything unreferenced.
	if out, err := berthRun(t, "gc", "--cache-dir", dir, "--min-age", "0s"); err != nil || !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("gc of a pinned image: %v %q", err, out)
	}
	if imgs := lsJSON("--cache-dir", dir); len(imgs) != 1 || !imgs[0].Pinned || imgs[0].Blobs != len(all) {
		t.Fatalf("ls of the directory: %+v", imgs)
	}
	if _, err := berthRun(t, "unpin", "--cache-dir", dir, ref); err != nil {
		t.Fatalf("unpin on the directory: %v", err)
	}
	if out, err := berthRun(t, "ls", "--cache-dir", dir); err != nil || !strings.Contains(out, "site/app:v1") || !strings.Contains(out, " no ") {
		t.Fatalf("ls table: %v\n%s", err, out)
	}
}
