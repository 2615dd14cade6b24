// Package clientconf renders and checks the mirror settings of the clients
// that do not read containerd's hosts.toml (pkg/hoststoml does those):
// CRI-O and Podman's registries.conf (containers-registries.conf v2, TOML),
// k3s and RKE2's registries.yaml, and Docker's daemon.json. Each Merge
// function takes the file as it is (nil for none) and returns it with berth
// put first for each registry, keeping every other entry and setting the
// operator wrote; each Check function says why the file would not send a
// registry's pulls through berth.
package clientconf

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Registry is one registry whose pulls go through berth.
type Registry struct {
	// Name is the registry as image references write it: docker.io,
	// registry.k8s.io, 127.0.0.1:5001.
	Name string
	// Server is the registry's own URL, the client's fallback when berth
	// fails: https://registry-1.docker.io, http://127.0.0.1:5001.
	Server string
}

// ErrInvalid is wrapped by errors about the mirror URL or a registry.
var ErrInvalid = errors.New("invalid client config input")

// mirrorURL parses berth's URL as the client reaches it: http(s)://host[:port],
// no path, no user, no query.
func mirrorURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
		return nil, fmt.Errorf("mirror %q: want http(s)://host[:port]: %w", s, ErrInvalid)
	}
	u.Path = ""
	return u, nil
}

// serverURL parses a registry's own URL.
func serverURL(r Registry) (*url.URL, error) {
	u, err := url.Parse(r.Server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("registry %s: server %q: want http(s)://host[:port][/path]: %w", r.Name, r.Server, ErrInvalid)
	}
	return u, nil
}

// WriteFile replaces path with data through a temp file in its directory,
// fsync and rename, keeping the file's mode (0644 for a new one). The
// old file is kept as path.berth-backup, unless one is there already.
func WriteFile(path string, data []byte) error {
	mode := os.FileMode(0o644)
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		mode = fi.Mode().Perm()
		backup := path + ".berth-backup"
		if _, err := os.Lstat(backup); errors.Is(err, fs.ErrNotExist) {
			if err := writeAtomic(backup, old, mode); err != nil {
				return err
			}
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return writeAtomic(path, data, mode)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".berth-client-config-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
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
		return err
	}
	return os.Rename(f.Name(), path)
}
