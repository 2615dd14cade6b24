package crash

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/cache"
	"github.com/berth-registry/berth/pkg/airgap"
	"github.com/berth-registry/berth/pkg/oci"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"
)

const importRounds = 10

// TestKillDuringImportLeavesAVerifiedStore kills `berth import` with
// SIGKILL while it reads an archive or while it commits, then opens the
// store: every file in it hashes to its name, tmp/ is swept, and a tag is
// recorded only when everything its image needs is stored. A last import
// runs to the end and completes whatever the killed ones left.
func TestKillDuringImportLeavesAVerifiedStore(t *testing.T) {
	if testing.Short() {
		t.Skip("builds berth and runs it repeatedly")
	}
	bin := buildBerth(t)
	archive, images := buildArchive(t)
	var dir string
	for round := range importRounds {
		// Half the kills land while the archive streams in (nothing may
		// be kept then), half after its last byte, while blobs are
		// committed. Each round starts from an empty store.
		dir = filepath.Join(t.TempDir(), "store")
		atEOF := round%2 == 1
		cut := int64(rand.IntN(len(archive)))
		runImport(t, bin, dir, archive, cut, atEOF)
		checkBlobsHash(t, dir)
		if blobs := checkImportedStore(t, dir, images, false); !atEOF && blobs != 0 {
			t.Errorf("round %d: killed while reading the archive, the store kept %d blobs", round, blobs)
		}
	}
	runImport(t, bin, dir, archive, int64(len(archive)), false)
	checkBlobsHash(t, dir)
	checkImportedStore(t, dir, images, true)
}

// archiveImage is an image in the test archive: its tag key and content.
type archiveImage struct {
	tag     string
	content []digest.Digest
}

// buildArchive exports three random images (about 12 MiB) from a scratch
// store as a layout tar.
func buildArchive(t *testing.T) ([]byte, []archiveImage) {
	t.Helper()
	s, err := cache.Open(t.TempDir(), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var (
		imgs []airgap.Image
		out  []archiveImage
	)
	for _, name := range []string{"a", "b", "c"} {
		img, err := random.Image(2<<20, 2)
		if err != nil {
			t.Fatal(err)
		}
		content := storeImage(t, s, img)
		repo := oci.Repo{Registry: "registry.test", Name: "crash/" + name}
		key := cache.TagKey(repo.Registry, repo.Name, "v1")
		if err := s.SetTag(key, cache.Tag{Digest: content[len(content)-1]}); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, airgap.Image{Repo: repo, Tag: "v1", Digest: content[len(content)-1], Ref: key})
		out = append(out, archiveImage{tag: key, content: content})
	}
	var buf bytes.Buffer
	if _, err := airgap.Export(t.Context(), s, imgs, airgap.NewTarWriter(&buf), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), out
}

// storeImage commits img into s; the manifest's digest comes last.
func storeImage(t *testing.T, s *cache.Store, img v1.Image) []digest.Digest {
	t.Helper()
	var out []digest.Digest
	layers, _ := img.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		size, _ := l.Size()
		rc, _ := l.Compressed()
		st, err := s.Stage(rc, digest.Digest(d.String()), size)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Commit(""); err != nil {
			t.Fatal(err)
		}
		out = append(out, st.Digest)
	}
	cfg, _ := img.RawConfigFile()
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	for _, c := range []struct {
		mt   string
		data []byte
	}{{"", cfg}, {string(mt), raw}} {
		d := digest.FromBytes(c.data)
		if err := s.Put(d, c.mt, c.data); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// runImport runs `berth import --cache-dir dir -` fed the archive through
// a pipe. With cut < len(archive) it is killed after cut bytes; with atEOF
// a random moment after the last byte. A run that is not killed must
// succeed.
func runImport(t *testing.T, bin, dir string, archive []byte, cut int64, atEOF bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "import", "--cache-dir", dir, "-")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	kill := cut < int64(len(archive)) || atEOF
	if !atEOF {
		_, _ = io.Copy(stdin, bytes.NewReader(archive[:cut]))
	} else {
		_, _ = io.Copy(stdin, bytes.NewReader(archive))
		stdin.Close()
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // the random kill point
	}
	if kill {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		return
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("import: %v\n%s", err, out.String())
	}
}

// checkImportedStore opens the store (sweeping tmp/ as a server would):
// each recorded tag's image is whole; with all, every image is there,
// tagged and pinned. It returns how many blobs the store holds.
func checkImportedStore(t *testing.T, dir string, images []archiveImage, all bool) int64 {
	t.Helper()
	s, err := cache.Open(dir, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkNoTemp(t, dir)
	tags := 0
	for _, img := range images {
		tag, err := s.Tag(img.tag)
		if err != nil {
			if all {
				t.Errorf("tag %s missing after a whole import: %v", img.tag, err)
			}
			continue
		}
		tags++
		if tag.Digest != img.content[len(img.content)-1] {
			t.Errorf("tag %s at %s", img.tag, tag.Digest)
		}
		for _, d := range img.content {
			if !s.Has(d) {
				t.Errorf("tag %s recorded but %s is not stored", img.tag, d)
			}
		}
		if all {
			if pinned, err := s.PinnedSet(); err != nil || !pinned[img.content[0]] {
				t.Errorf("%s not pinned: %v", img.tag, err)
			}
		}
	}
	_, blobs := s.Usage()
	t.Logf("store after the import: %d blobs, %d of %d tags", blobs, tags, len(images))
	return blobs
}
