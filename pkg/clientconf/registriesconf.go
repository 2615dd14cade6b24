package clientconf

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/berth-registry/berth/pkg/oci"
)

// MirrorLocation is the registries.conf [[registry.mirror]] location that
// sends a registry's pulls to berth at mirror: berth's host:port and the
// registry as the first path segment. containers/image (CRI-O, Podman,
// skopeo, buildah) sends no ns parameter the way containerd does, so the
// path is how berth knows the registry. A registry with a port is written
// HOST_PORT (oci.PathSegment): the location is joined with the image's
// repository into an image reference, whose path cannot hold a ':'
// (mirror:5000/127.0.0.1:5001 fails with "invalid reference format").
func MirrorLocation(mirror, registry string) (string, error) {
	u, err := mirrorURL(mirror)
	if err != nil {
		return "", err
	}
	if registry == "_default" {
		return "", fmt.Errorf("registries.conf has no catch-all mirror: list each registry: %w", ErrInvalid)
	}
	seg := oci.PathSegment(registry)
	if strings.ContainsAny(seg, ":[]") {
		return "", fmt.Errorf("registry %s: an IPv6 literal has no registries.conf mirror path; name it by a host name: %w", registry, ErrInvalid)
	}
	return u.Host + "/" + seg, nil
}

// RegistriesConf returns existing (a containers-registries.conf v2 file,
// nil for none) with berth as the first mirror of each registry: an
// existing [[registry]] whose prefix (or, without one, location) is the
// registry's name keeps its location, settings and other mirrors and gets
// berth's mirror in front (an older entry at the same location dropped);
// a registry without one gets a [[registry]] whose location is its server
// (the fallback when berth fails). insecure = true goes with each plain
// HTTP location. Every other key and entry stays; comments do not (the
// file is re-encoded). A v1 file ([registries.search]) is refused, as
// containers/image refuses one mixing both.
func RegistriesConf(existing []byte, mirror string, regs []Registry) ([]byte, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(existing, &doc); err != nil {
		return nil, fmt.Errorf("registries.conf: %w", err)
	}
	if _, v1 := doc["registries"]; v1 {
		return nil, fmt.Errorf("registries.conf is in the v1 format ([registries.search]); convert it to v2 ([[registry]]) first: %w", ErrInvalid)
	}
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	entries, err := tableArray(doc["registry"], "registry")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, r := range regs {
		if seen[r.Name] {
			return nil, fmt.Errorf("registry %s: listed twice: %w", r.Name, ErrInvalid)
		}
		seen[r.Name] = true
		loc, err := MirrorLocation(mirror, r.Name)
		if err != nil {
			return nil, err
		}
		berth := map[string]any{"location": loc}
		if u.Scheme == "http" {
			berth["insecure"] = true
		}
		i := findEntry(entries, r.Name)
		if i < 0 {
			s, err := serverURL(r)
			if err != nil {
				return nil, err
			}
			e := map[string]any{"prefix": r.Name, "location": s.Host + strings.TrimRight(s.Path, "/")}
			if s.Scheme == "http" {
				e["insecure"] = true
			}
			entries = append(entries, e)
			i = len(entries) - 1
		}
		mirrors, err := tableArray(entries[i]["mirror"], "registry.mirror")
		if err != nil {
			return nil, err
		}
		kept := []map[string]any{berth}
		for _, m := range mirrors {
			if m["location"] != loc {
				kept = append(kept, m)
			}
		}
		entries[i]["mirror"] = kept
	}
	doc["registry"] = entries
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.SetIndentTables(true)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("registries.conf: %w", err)
	}
	return b.Bytes(), nil
}

// CheckRegistriesConf reports, one line per problem, why the
// registries.conf content would not send each registry's pulls to berth
// at mirror first: no [[registry]] for it, blocked, berth not its first
// mirror, a plain HTTP berth without insecure = true, mirror-by-digest-only
// (tags would go to the registry itself), or a mirror location whose path
// holds a registry name with a port (containers/image rejects it).
func CheckRegistriesConf(content []byte, mirror string, regs []Registry) ([]string, error) {
	doc := map[string]any{}
	if err := toml.Unmarshal(content, &doc); err != nil {
		return nil, fmt.Errorf("registries.conf: %w", err)
	}
	if _, v1 := doc["registries"]; v1 {
		return []string{"the file is in the v1 format ([registries.search]), which has no mirrors"}, nil
	}
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	entries, err := tableArray(doc["registry"], "registry")
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, e := range entries {
		mirrors, _ := tableArray(e["mirror"], "registry.mirror")
		for _, m := range mirrors {
			loc, _ := m["location"].(string)
			if _, path, ok := strings.Cut(loc, "/"); ok && strings.Contains(path, ":") {
				fixed := loc
				if host, _, _ := strings.Cut(path, "/"); oci.PathSegment(host) != host {
					fixed = strings.Replace(loc, "/"+host, "/"+oci.PathSegment(host), 1)
				}
				problems = append(problems, fmt.Sprintf("mirror location %q: containers/image rejects a ':' in its path (invalid reference format); berth names a registry with a port %q", loc, fixed))
			}
		}
	}
	for _, r := range regs {
		want, err := MirrorLocation(mirror, r.Name)
		if err != nil {
			return nil, err
		}
		i := findEntry(entries, r.Name)
		if i < 0 {
			problems = append(problems, fmt.Sprintf("%s: no [[registry]] with prefix = %q: its pulls do not go through berth", r.Name, r.Name))
			continue
		}
		e := entries[i]
		if b, _ := e["blocked"].(bool); b {
			problems = append(problems, fmt.Sprintf("%s: blocked = true: nothing is pulled from it, not even through berth", r.Name))
		}
		if b, _ := e["mirror-by-digest-only"].(bool); b {
			problems = append(problems, fmt.Sprintf("%s: mirror-by-digest-only = true: pulls by tag bypass berth", r.Name))
		}
		mirrors, _ := tableArray(e["mirror"], "registry.mirror")
		if len(mirrors) == 0 || mirrors[0]["location"] != want {
			problems = append(problems, fmt.Sprintf("%s: berth (location = %q) is not its first [[registry.mirror]]", r.Name, want))
			continue
		}
		if insecure, _ := mirrors[0]["insecure"].(bool); u.Scheme == "http" && !insecure {
			problems = append(problems, fmt.Sprintf("%s: berth's mirror is plain HTTP but has no insecure = true: the client would try HTTPS and fail over to the registry", r.Name))
		}
	}
	return problems, nil
}

// findEntry is the index of the [[registry]] for name: prefix == name, or
// no prefix and location == name (the entry's prefix then defaults to
// its location). -1 for none.
func findEntry(entries []map[string]any, name string) int {
	for i, e := range entries {
		prefix, _ := e["prefix"].(string)
		if prefix == "" {
			prefix, _ = e["location"].(string)
		}
		if prefix == name {
			return i
		}
	}
	return -1
}

// tableArray reads an array of tables as decoded by go-toml; nil is none.
func tableArray(v any, name string) ([]map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("registries.conf: %s is not an array of tables: %w", name, ErrInvalid)
	}
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		m, ok := x.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("registries.conf: an element of %s is not a table: %w", name, ErrInvalid)
		}
		out = append(out, m)
	}
	return out, nil
}
