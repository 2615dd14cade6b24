package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ParseRegistryFlag parses the CLI's --registry value, NAME=URL[,URL...] or
// NAME alone (its KnownEndpoint), into a Registry with those endpoints, in
// order. `berth serve` and `berth hosts-toml` both read --registry with it.
// Errors say what is wrong with the name or which URL is bad.
func ParseRegistryFlag(s string) (Registry, error) {
	name, urls, ok := strings.Cut(s, "=")
	name = strings.TrimSpace(name)
	if err := CheckRegistryName(name); err != nil {
		return Registry{}, fmt.Errorf("registry name: %w (want NAME or NAME=URL[,URL...])", err)
	}
	if !ok {
		urls = KnownEndpoint(name)
	}
	r := Registry{Name: name}
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u == "" {
			continue
		}
		if err := CheckEndpoint(u); err != nil {
			return Registry{}, fmt.Errorf("registry %s: %w", name, err)
		}
		r.Endpoints = append(r.Endpoints, u)
	}
	if len(r.Endpoints) == 0 {
		return Registry{}, fmt.Errorf("registry %s: no endpoint URL: want NAME=URL[,URL...]", name)
	}
	return r, nil
}

// KnownEndpoint returns the API URL of a registry name: docker.io's API lives
// at https://registry-1.docker.io, every other registry's at https://NAME.
func KnownEndpoint(name string) string {
	switch name {
	case "docker.io", "index.docker.io", "registry-1.docker.io":
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}

// SetRegistry puts r in the registry list: it replaces the registry of the
// same name whole (credentials included) in its place, or appends r.
func (c *Config) SetRegistry(r Registry) {
	if i := c.registry(r.Name); i >= 0 {
		c.Registries[i] = r
		return
	}
	c.Registries = append(c.Registries, r)
}

const credPrefix = EnvPrefix + "REGISTRY_"

// The credential variables, longest suffix first.
var credSuffixes = []string{"_PASSWORD_FILE", "_USERNAME", "_PASSWORD"}

// RegistryEnvKey is the part of a credential variable's name that stands
// for a registry: its name upper-cased, every character other than a letter
// or digit made "_" (docker.io is DOCKER_IO, 127.0.0.1:5000 is
// 127_0_0_1_5000).
func RegistryEnvKey(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, name)
}

func isCredentialEnv(k string) bool {
	_, _, ok := splitCredentialEnv(k)
	return ok
}

func splitCredentialEnv(k string) (key, suffix string, ok bool) {
	rest, ok := strings.CutPrefix(k, credPrefix)
	if !ok {
		return "", "", false
	}
	for _, s := range credSuffixes {
		if key, ok := strings.CutSuffix(rest, s); ok && key != "" {
			return key, s, true
		}
	}
	return "", "", false
}

// ApplyCredentialEnv sets registry credentials from the variables
// BERTH_REGISTRY_<KEY>_USERNAME, _PASSWORD and _PASSWORD_FILE in environ,
// where KEY is RegistryEnvKey of the registry's name. Call it after the
// registry list is final (file and --registry flags), so the variables reach
// registries the flags added. A variable overrides the file's credential
// source: a password clears passwordFile and the reverse, a username clears
// dockerConfig. Errors, joined, name the variable: one naming no configured
// registry, or a KEY two registries share. Values never appear in errors.
func ApplyCredentialEnv(cfg *Config, environ []string) error {
	byKey := map[string][]int{}
	for i, r := range cfg.Registries {
		k := RegistryEnvKey(r.Name)
		byKey[k] = append(byKey[k], i)
	}
	env := envMap(environ)
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	var errs []error
	for _, k := range names {
		key, suffix, ok := splitCredentialEnv(k)
		if !ok {
			continue
		}
		switch idx := byKey[key]; len(idx) {
		case 0:
			errs = append(errs, fmt.Errorf("%s: no configured registry has the key %s", k, key))
		case 1:
			setCredential(&cfg.Registries[idx[0]], suffix, env[k])
		default:
			errs = append(errs, fmt.Errorf("%s: registries %s and %s both have the key %s",
				k, cfg.Registries[idx[0]].Name, cfg.Registries[idx[1]].Name, key))
		}
	}
	return errors.Join(errs...)
}

func setCredential(r *Registry, suffix, v string) {
	switch suffix {
	case "_USERNAME":
		r.Username, r.DockerConfig = v, ""
	case "_PASSWORD":
		r.Password, r.PasswordFile = v, ""
	case "_PASSWORD_FILE":
		r.PasswordFile, r.Password = v, ""
	}
}
