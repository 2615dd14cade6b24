package hoststoml

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// Containerd is what a containerd config.toml says about hosts.toml files:
// where its CRI plugin reads them (config_path), and whether pulls go through
// the transfer service, which reads config_path as one directory.
type Containerd struct {
	Path       string   // the config file
	Version    int      // its "version": 1, 2 (containerd 1.x), 3 or 4 (2.x)
	Table      string   // the TOML table of config_path
	ConfigPath string   // "" when unset
	LocalPull  bool     // use_local_image_pull = true: the CRI plugin pulls itself (2.1+)
	Problems   []string // why containerd would not read berth's hosts.toml files
	Warnings   []string // fine today, a problem after an upgrade
}

// registryTable is the table holding config_path, per config version.
func registryTable(version int) []string {
	switch {
	case version >= 3:
		return []string{"plugins", "io.containerd.cri.v1.images", "registry"}
	case version == 2:
		return []string{"plugins", "io.containerd.grpc.v1.cri", "registry"}
	}
	return []string{"plugins", "cri", "registry"}
}

func tableName(keys []string) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		if strings.Contains(k, ".") {
			k = `"` + k + `"`
		}
		out[i] = k
	}
	return strings.Join(out, ".")
}

// CheckContainerd reads the containerd config at path and reports whether
// containerd reads hosts.toml files from dir, berth's --dir. Problems are:
// config_path unset, config_path not naming dir, and, on a version 3
// or 4 config (containerd 2.x) whose CRI plugin pulls through the transfer
// service (no use_local_image_pull = true), a config_path listing several
// directories: the transfer service does not split it (containerd issues
// 12415 and 12636), so every hosts.toml is ignored and pulls bypass berth.
func CheckContainerd(path, dir string) (*Containerd, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("containerd config: %w", err)
	}
	return checkContainerd(path, data, dir)
}

func checkContainerd(path string, data []byte, dir string) (*Containerd, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("containerd config %s: %w", path, err)
	}
	c := &Containerd{Path: path, Version: 1}
	if v, ok := doc["version"].(int64); ok {
		c.Version = int(v)
	}
	keys := registryTable(c.Version)
	c.Table = tableName(keys)
	reg := lookup(doc, keys...)
	c.ConfigPath, _ = reg["config_path"].(string)
	if c.Version >= 3 {
		c.LocalPull, _ = lookup(doc, keys[:2]...)["use_local_image_pull"].(bool)
	}
	dirs := filepath.SplitList(c.ConfigPath)
	fix := fmt.Sprintf("set config_path = %q in [%s] of %s (berth hosts-toml --fix-containerd-config does it), then restart containerd", dir, c.Table, path)
	switch {
	case c.ConfigPath == "":
		c.Problems = append(c.Problems, fmt.Sprintf("config_path is not set in [%s]: containerd does not read hosts.toml files from %s; %s", c.Table, dir, fix))
	case !slices.Contains(dirs, filepath.Clean(dir)) && !slices.Contains(dirs, dir):
		c.Problems = append(c.Problems, fmt.Sprintf("config_path %q does not name %s, where berth writes hosts.toml files; %s", c.ConfigPath, dir, fix))
	case len(dirs) > 1 && c.Version >= 3 && !c.LocalPull:
		c.Problems = append(c.Problems, fmt.Sprintf("config_path %q lists several directories: containerd 2.1+ pulls through its transfer service, which does not split config_path (containerd issues 12415, 12636), so hosts.toml files are ignored and pulls bypass berth; %s", c.ConfigPath, fix))
	case len(dirs) > 1:
		c.Warnings = append(c.Warnings, fmt.Sprintf("config_path %q lists several directories: containerd 2.1+ with the transfer service ignores such a config_path; set it to %q before upgrading", c.ConfigPath, dir))
	}
	return c, nil
}

// lookup walks nested tables; a missing one gives nil.
func lookup(doc map[string]any, keys ...string) map[string]any {
	cur := doc
	for _, k := range keys {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// FixMarker ends the config_path line FixContainerd writes.
const FixMarker = "# set by berth hosts-toml"

var configPathLine = regexp.MustCompile(`^(\s*)config_path\s*=`)

// FixContainerd sets config_path to dir in the containerd config at path,
// changing only that line (or adding it under its table, or adding the
// table), so comments and the rest of the file stay as they were. The old
// file is kept as path.berth-backup, unless one is there already. It
// refuses, changing nothing, when the edited file would not parse or would
// still have a problem. It reports whether it changed the file. containerd
// reads its config only at start: restart it afterwards.
func FixContainerd(path, dir string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("containerd config: %w", err)
	}
	before, err := checkContainerd(path, data, dir)
	if err != nil {
		return false, err
	}
	if len(before.Problems) == 0 {
		return false, nil
	}
	edited := setConfigPath(string(data), before.Table, dir)
	after, err := checkContainerd(path, []byte(edited), dir)
	if err != nil {
		return false, fmt.Errorf("containerd config %s: cannot fix it (the edit would not parse: %v); %s", path, err, strings.Join(before.Problems, "; "))
	}
	if len(after.Problems) > 0 {
		return false, fmt.Errorf("containerd config %s: cannot fix it: %s", path, strings.Join(after.Problems, "; "))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	backup := path + ".berth-backup"
	if _, err := os.Lstat(backup); errors.Is(err, os.ErrNotExist) {
		if err := writeAtomic(backup, data, fi.Mode().Perm()); err != nil {
			return false, err
		}
	}
	return true, writeAtomic(path, []byte(edited), fi.Mode().Perm())
}

// setConfigPath edits the config text: see FixContainerd.
func setConfigPath(text, table, dir string) string {
	line := fmt.Sprintf("config_path = %q %s", dir, FixMarker)
	lines := strings.Split(text, "\n")
	norm := func(s string) string { return strings.ReplaceAll(strings.Join(strings.Fields(s), ""), "'", `"`) }
	header := norm("[" + table + "]")
	for i, l := range lines {
		if norm(l) != header {
			continue
		}
		end := len(lines)
		for j := i + 1; j < len(lines); j++ {
			if strings.HasPrefix(strings.TrimSpace(lines[j]), "[") {
				end = j
				break
			}
		}
		for j := i + 1; j < end; j++ {
			if m := configPathLine.FindStringSubmatch(lines[j]); m != nil {
				lines[j] = m[1] + line + "; was: " + strings.TrimSpace(strings.SplitN(lines[j], "=", 2)[1])
				return strings.Join(lines, "\n")
			}
		}
		indent := "  "
		if m := regexp.MustCompile(`^(\s*)`).FindString(l); m != "" {
			indent = m + "  "
		}
		lines = slices.Insert(lines, i+1, indent+line)
		return strings.Join(lines, "\n")
	}
	if !strings.HasSuffix(text, "\n") && text != "" {
		text += "\n"
	}
	return text + "\n[" + table + "]\n  " + line + "\n"
}

// writeAtomic writes data to path through a temp file, fsync and rename.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".berth-containerd-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
