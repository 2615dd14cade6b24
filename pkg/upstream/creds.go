package upstream

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/berth-registry/berth/pkg/config"
	"github.com/berth-registry/berth/pkg/oci"
)

// credentials are what berth presents to a registry. The zero value is
// anonymous. They are never logged or put into an error.
type credentials struct {
	Username      string
	Password      string
	IdentityToken string // OAuth2 refresh token (docker login to some registries)
	RegistryToken string // a bearer token used as it is
}

func (c credentials) anonymous() bool { return c == credentials{} }

// EnvPrefix returns the prefix of the environment variables holding a
// registry's credentials: BERTH_REGISTRY_<NAME>_ (see the package doc).
func EnvPrefix(registry string) string {
	b := []byte(strings.ToUpper(registry))
	for i, ch := range b {
		if (ch < 'A' || ch > 'Z') && (ch < '0' || ch > '9') {
			b[i] = '_'
		}
	}
	return "BERTH_REGISTRY_" + string(b) + "_"
}

// loadCredentials reads a registry's credentials from the environment, the
// config, its password file or its Docker config, first match wins.
// Errors name the file, never its content.
func loadCredentials(rc config.Registry, hosts []string) (credentials, error) {
	p := EnvPrefix(rc.Name)
	if u := os.Getenv(p + "USERNAME"); u != "" {
		return credentials{Username: u, Password: os.Getenv(p + "PASSWORD")}, nil
	}
	if rc.Username != "" {
		c := credentials{Username: rc.Username, Password: rc.Password}
		if rc.PasswordFile != "" {
			b, err := os.ReadFile(rc.PasswordFile)
			if err != nil {
				return credentials{}, fmt.Errorf("password file: %w", err)
			}
			c.Password = strings.TrimRight(string(b), "\r\n")
		}
		return c, nil
	}
	if rc.DockerConfig != "" {
		return dockerConfigCredentials(rc.DockerConfig, dockerConfigKeys(rc.Name, hosts))
	}
	return credentials{}, nil
}

// dockerConfigKeys are the "auths" keys that may hold a registry's entry.
func dockerConfigKeys(name string, hosts []string) []string {
	keys := []string{name}
	if name == oci.DockerHub {
		keys = append(keys, "https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io")
	}
	for _, h := range hosts {
		keys = append(keys, h)
	}
	return keys
}

type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// dockerConfigCredentials reads the entry for one of keys from a Docker
// config.json. Keys may be written as hosts or as URLs.
func dockerConfigCredentials(path string, keys []string) (credentials, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return credentials{}, fmt.Errorf("docker config: %w", err)
	}
	var f struct {
		Auths map[string]dockerAuth `json:"auths"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return credentials{}, fmt.Errorf("docker config %s: not a JSON config", path)
	}
	byHost := map[string]dockerAuth{}
	for k, a := range f.Auths {
		byHost[k] = a
		byHost[hostOf(k)] = a
	}
	for _, k := range keys {
		a, ok := byHost[k]
		if !ok {
			continue
		}
		c := credentials{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if a.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return credentials{}, fmt.Errorf("docker config %s: entry %s: auth is not base64", path, k)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return credentials{}, fmt.Errorf("docker config %s: entry %s: auth is not user:password", path, k)
			}
			c.Username, c.Password = user, pass
		}
		if c.IdentityToken != "" && c.Username == "" {
			c.Username = "<token>"
		}
		return c, nil
	}
	return credentials{}, nil
}

// hostOf returns the host of a config.json key written as a URL.
func hostOf(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	h, _, _ := strings.Cut(k, "/")
	return h
}
