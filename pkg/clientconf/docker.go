package clientconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// DockerDaemon returns existing (Docker's daemon.json, nil for none) with
// berth first in "registry-mirrors" and, for a plain HTTP berth, its
// host:port in "insecure-registries"; every other key stays as it was.
// Docker's registry-mirrors only ever mirrors Docker Hub (pulls from any
// other registry go to that registry itself), so regs may only name
// docker.io.
func DockerDaemon(existing []byte, mirror string, regs []Registry) ([]byte, error) {
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	if err := dockerHubOnly(regs); err != nil {
		return nil, err
	}
	doc := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(existing)) > 0 {
		if err := json.Unmarshal(existing, &doc); err != nil {
			return nil, fmt.Errorf("daemon.json: %w", err)
		}
	}
	mirrors, err := stringList(doc, "registry-mirrors")
	if err != nil {
		return nil, err
	}
	berth := u.String()
	list := []string{berth}
	for _, m := range mirrors {
		if strings.TrimRight(m, "/") != berth {
			list = append(list, m)
		}
	}
	if doc["registry-mirrors"], err = json.Marshal(list); err != nil {
		return nil, err
	}
	if u.Scheme == "http" {
		insecure, err := stringList(doc, "insecure-registries")
		if err != nil {
			return nil, err
		}
		if !slices.Contains(insecure, u.Host) {
			if doc["insecure-registries"], err = json.Marshal(append(insecure, u.Host)); err != nil {
				return nil, err
			}
		}
	}
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// CheckDockerDaemon reports why daemon.json would not send Docker Hub
// pulls to berth at mirror first.
func CheckDockerDaemon(content []byte, mirror string, regs []Registry) ([]string, error) {
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	if err := dockerHubOnly(regs); err != nil {
		return nil, err
	}
	var cfg struct {
		Mirrors  []string `json:"registry-mirrors"`
		Insecure []string `json:"insecure-registries"`
	}
	if err := json.Unmarshal(content, &cfg); err != nil {
		return nil, fmt.Errorf("daemon.json: %w", err)
	}
	var problems []string
	if len(cfg.Mirrors) == 0 || strings.TrimRight(cfg.Mirrors[0], "/") != u.String() {
		problems = append(problems, fmt.Sprintf("berth (%s) is not the first of registry-mirrors (%q)", u, cfg.Mirrors))
	}
	if u.Scheme == "http" && !slices.Contains(cfg.Insecure, u.Host) {
		problems = append(problems, fmt.Sprintf("berth is plain HTTP but %q is not in insecure-registries: Docker would try HTTPS and skip the mirror", u.Host))
	}
	return problems, nil
}

func dockerHubOnly(regs []Registry) error {
	for _, r := range regs {
		if r.Name != "docker.io" {
			return fmt.Errorf("registry %s: Docker's registry-mirrors only mirrors Docker Hub (docker.io); pulls from %s go to it directly, whatever daemon.json says: %w", r.Name, r.Name, ErrInvalid)
		}
	}
	return nil
}

// stringList reads a list of strings from a daemon.json key; absent is empty.
func stringList(doc map[string]json.RawMessage, key string) ([]string, error) {
	raw, ok := doc[key]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("daemon.json: %q is not a list of strings: %w", key, ErrInvalid)
	}
	return list, nil
}
