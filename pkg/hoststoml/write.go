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
	Removed   Action = "removed"   // berth's file, or the block it prepended, for a registry no longer mirrored (prune, remove)
	Prepended Action = "prepended" // berth's block put first in, or rewritten in, a hosts.toml that is not berth's
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
// reported as Skipped, unless opt.Prepend is set and the directory has a
// hosts.toml: berth's block then goes first in that file (Prepend), the
// rest of it kept. With prune, berth's own files and blocks for
// registries not in hosts are removed. A file with opt.Authorization is
// written 0600.
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
		r, err := writeOne(dir, h.Name, content, opt)
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

func writeOne(dir, name string, content []byte, opt Options) (Result, error) {
	hostDir := filepath.Join(dir, name)
	r := Result{Name: name, Path: filepath.Join(hostDir, FileName), Action: Skipped}
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return r, fmt.Errorf("create %s: %w", hostDir, err)
	}
	st, err := inspect(hostDir)
	if err != nil {
		return r, err
	}
	mode := os.FileMode(0o644)
	if opt.Authorization != "" {
		mode = 0o600
	}
	action := Written
	switch {
	case st.foreign && opt.Prepend:
		prepended, err := Prepend(st.content, opt)
		if err != nil {
			r.Reason = "cannot prepend berth: " + err.Error()
			return r, fmt.Errorf("%s: %w", r.Path, err)
		}
		content, action = prepended, Prepended
		if opt.Authorization == "" {
			mode = st.mode
		}
	case st.reason != "":
		r.Reason = st.reason
		if st.foreign {
			r.Reason += " (--prepend puts berth first in it)"
		}
		return r, nil
	}
	if st.exists && bytes.Equal(st.content, content) && st.mode == mode {
		r.Action = Unchanged
		return r, nil
	}
	tmp, err := writeTemp(hostDir, content, mode)
	if err != nil {
		return r, err
	}
	defer os.Remove(tmp) // no-op after a rename; after a link, drops the extra name
	if st.exists {
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
	r.Action = action
	return r, nil
}

// hostDirState is what inspect found in a registry directory.
type hostDirState struct {
	content []byte
	mode    os.FileMode
	exists  bool   // a hosts.toml is there
	foreign bool   // it is a regular file without Marker
	reason  string // why berth must not write its own file there
}

// inspect reads hostDir's hosts.toml. A non-empty reason means berth must
// not write its own file there.
func inspect(hostDir string) (hostDirState, error) {
	var st hostDirState
	entries, err := os.ReadDir(hostDir)
	if err != nil {
		return st, fmt.Errorf("read %s: %w", hostDir, err)
	}
	for _, e := range entries {
		if n := e.Name(); n != FileName && !strings.HasPrefix(n, tmpPrefix) && st.reason == "" {
			st.reason = fmt.Sprintf("directory holds %s, which berth did not write", n)
		}
	}
	path := filepath.Join(hostDir, FileName)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("stat %s: %w", path, err)
	}
	st.exists = true
	if !fi.Mode().IsRegular() {
		st.reason = "hosts.toml is not a regular file"
		return st, nil
	}
	st.mode = fi.Mode().Perm()
	st.content, err = os.ReadFile(path)
	if err != nil {
		return st, fmt.Errorf("read %s: %w", path, err)
	}
	if !IsManaged(st.content) {
		st.foreign = true
		st.reason = "hosts.toml has no \"" + Marker + "\" line: not berth's"
	}
	return st, nil
}

func writeTemp(hostDir string, content []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(hostDir, tmpPrefix+"*")
	if err != nil {
		return "", fmt.Errorf("create temp in %s: %w", hostDir, err)
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(mode)
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

// Remove takes out everything berth wrote in dir: its own hosts.toml
// files (and their directories when that leaves them empty) and the blocks
// it prepended to other files, leaving the rest of those byte for byte.
func Remove(dir string) ([]Result, error) {
	return pruneStale(dir, nil)
}

// pruneStale removes berth's hosts.toml, or the block berth prepended to
// another's, from registry directories not in want; a directory left
// empty goes too.
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
			rest, found, err := Unprepend(content)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path, err))
				continue
			}
			if !found {
				continue
			}
			tmp, err := writeTemp(filepath.Dir(path), rest, fi.Mode().Perm())
			if err == nil {
				err = os.Rename(tmp, path)
				os.Remove(tmp)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("rewrite %s: %w", path, err))
				continue
			}
			results = append(results, Result{Name: e.Name(), Path: path, Action: Removed, Reason: "berth's block taken out; the rest of the file kept"})
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
