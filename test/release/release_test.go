// Package release tests scripts/release.sh, the release build: static
// linux/amd64 and linux/arm64 binaries with the version injected, checksums
// that match, and the same bytes from a second build.
package release

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const epoch = 1700000000

func release(t *testing.T, dist, platforms string) {
	t.Helper()
	cmd := exec.Command("bash", "../../scripts/release.sh")
	cmd.Env = append(os.Environ(), "DIST="+dist, "VERSION=v0.0.0-test", "REVISION=0123456789abcdef",
		"SOURCE_DATE_EPOCH=1700000000", "PLATFORMS="+platforms)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
}

// sums reads SHA256SUMS: file name -> hex digest.
func sums(t *testing.T, dist string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		m[name] = sum
	}
	return m
}

func TestRelease(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dist := t.TempDir()
	release(t, dist, "linux/amd64 linux/arm64")
	got := sums(t, dist)
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	if len(got) != len(machines) {
		t.Fatalf("SHA256SUMS lists %v, want one binary per platform", got)
	}
	for arch, machine := range machines {
		name := "berth-v0.0.0-test-linux-" + arch
		path := filepath.Join(dist, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != got[name] {
			t.Errorf("%s: SHA256SUMS says %s, file hashes to %x", name, got[name], sum)
		}
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if f.Machine != machine {
			t.Errorf("%s: ELF machine %v, want %v", name, f.Machine, machine)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked (%v)", name, p.Type)
			}
		}
		f.Close()
		if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(time.Unix(epoch, 0)) {
			t.Errorf("%s: mtime %v, want SOURCE_DATE_EPOCH", name, fi.ModTime())
		}
		if arch == runtime.GOARCH {
			out, err := exec.Command(path, "--version").CombinedOutput()
			if want := "berth v0.0.0-test (revision 0123456789abcdef, " + runtime.Version() + ")\n"; err != nil || string(out) != want {
				t.Errorf("%s --version: %q %v, want %q", name, out, err, want)
			}
		}
	}

	// A second build of the same source gives the same bytes.
	again := t.TempDir()
	release(t, again, "linux/"+runtime.GOARCH)
	name := "berth-v0.0.0-test-linux-" + runtime.GOARCH
	if s := sums(t, again)[name]; s != got[name] {
		t.Errorf("rebuild of %s hashes to %s, first build %s: not reproducible", name, s, got[name])
	}
}
