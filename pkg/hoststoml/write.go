package hoststoml

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FileName is the file containerd reads in each registry directory.
const FileName = "hosts.toml"

const tmpPrefix = ".hosts.toml.berth-"

// Action is what Write did with one registry's file.
type Action string

// Actions reported in a Result.
const (
	Written   Action = "written"   // created or replaced with new content
	Unchanged Action = "unchanged" // berth's file already had this content
	Skipped   Action = "skipped"   // a file or directory berth did not write is in the way
	Removed   Action = "removed"   // berth's file for a registry no longer mirrored (prune)
)

// Result is the outcome for one registry directory.
type Result struct {
	Name   string // registry directory name
	Path   string // the hosts.toml path
	Action Action
	Reason string // why it was skipped
}

// Write renders each host and writes <dir>/<name>/hosts.toml atomically
// (temp file, fsync, rename, directory fsync). It never replaces a file
// without Marker, nor writes into a registry directory holding other files
// (Docker-style certificates that a new hosts.toml would hide): those are
// reported as Skipped. With prune, berth's own files for registries not in
// hosts are removed.
//
// Write is safe against a concurrent writer creating a file in its way:
// a new file is linked into place, which fails if the name exists. Replacing
// a berth file races only with someone editing that berth file at the same
// instant. Errors for one registry do not stop the others; they are joined.
func Write(dir string, hosts []Host, opt Options, prune bool) ([]Result, error) {
	var results []Result
	var errs []error
	want := map[string]bool{}
	for _, h := range hosts {
		if want[h.Name] {
			errs = append(errs, fmt.Errorf("registry %s: listed twice: %w", h.Name, ErrInvalid))
			continue
		}
		want[h.Name] = true
		content, err := Render(h, opt)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := writeOne(dir, h.Name, content)
		if err != nil {
			errs = append(errs, fmt.Errorf("registry %s: %w", h.Name, err))
			continue
		}
		results = append(results, r)
	}
	if prune {
		rs, err := pruneStale(dir, want)
		results = append(results, rs...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return results, errors.Join(errs...)
}

func writeOne(dir, name string, content []byte) (Result, error) {
	hostDir := filepath.Join(dir, name)
	r := Result{Name: name, Path: filepath.Join(hostDir, FileName), Action: Skipped}
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return r, fmt.Errorf("create %s: %w", hostDir, err)
	}
	old, exists, reason, err := inspect(hostDir)
	if err != nil || reason != "" {
		r.Reason = reason
		return r, err
	}
	if exists && bytes.Equal(old, content) {
		r.Action = Unchanged
		return r, nil
	}
	tmp, err := writeTemp(hostDir, content)
	if err != nil {
		return r, err
	}
	defer os.Remove(tmp) // no-op after a rename; after a link, drops the extra name
	if exists {
		err = os.Rename(tmp, r.Path)
	} else if err = os.Link(tmp, r.Path); errors.Is(err, fs.ErrExist) {
		r.Reason = "a hosts.toml appeared while berth was writing; left alone"
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("install %s: %w", r.Path, err)
	}
	if err := syncDir(hostDir); err != nil {
		return r, err
	}
	r.Action = Written
	return r, nil
}

// inspect reads hostDir's hosts.toml. A non-empty reason means berth must
// not write there.
func inspect(hostDir string) (content []byte, exists bool, reason string, err error) {
	entries, err := os.ReadDir(hostDir)
	if err != nil {
		return nil, false, "", fmt.Errorf("read %s: %w", hostDir, err)
	}
	for _, e := range entries {
		if n := e.Name(); n != FileName && !strings.HasPrefix(n, tmpPrefix) {
			return nil, false, fmt.Sprintf("directory holds %s, which berth did not write", n), nil
		}
	}
	path := filepath.Join(hostDir, FileName)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, "", nil
	}
	if err != nil {
		return nil, false, "", fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, true, "hosts.toml is not a regular file", nil
	}
	content, err = os.ReadFile(path)
	if err != nil {
		return nil, true, "", fmt.Errorf("read %s: %w", path, err)
	}
	if !IsManaged(content) {
		return content, true, "hosts.toml has no \"" + Marker + "\" line: not berth's", nil
	}
	return content, true, "", nil
}

func writeTemp(hostDir string, content []byte) (string, error) {
	f, err := os.CreateTemp(hostDir, tmpPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("create temp in %s: %w", hostDir, err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return f.Name(), nil
}

// pruneStale removes berth's hosts.toml from registry directories not in
// want, and the directory too when that leaves it empty.
func pruneStale(dir string, want map[string]bool) ([]Result, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var results []Result
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || want[e.Name()] {
			continue
		}
		path := filepath.Join(dir, e.Name(), FileName)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue // nothing of berth's here
		}
		content, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, fmt.Errorf("read %s: %w", path, err))
			continue
		}
		if !IsManaged(content) {
			continue
		}
		if err := os.Remove(path); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
			continue
		}
		_ = os.Remove(filepath.Dir(path)) // only succeeds when empty
		results = append(results, Result{Name: e.Name(), Path: path, Action: Removed})
	}
	return results, errors.Join(errs...)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
