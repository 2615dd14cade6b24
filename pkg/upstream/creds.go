package upstream

import (
	"fmt"
	"os"
	"strings"

	dockerconfig "github.com/docker/cli/cli/config"

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
	fromHelper    bool   // a Docker credential helper gave them: they may expire
}

func (c credentials) anonymous() bool { return c == credentials{} }

// loadCredentials reads a registry's credentials from the config, its
// password file or its Docker config, first match wins. The environment's
// credential variables are already in rc: config.ApplyCredentialEnv, the
// one reader of them, put them there. Errors name the file, never its
// content.
func loadCredentials(rc config.Registry, hosts []string) (credentials, error) {
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
		c, _, err := dockerConfigCredentials(rc.DockerConfig, dockerConfigKeys(rc.Name, hosts))
		return c, err
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

// dockerConfigCredentials reads the credentials for the first of keys
// that has any from a Docker config.json, as docker and crane do (the docker
// CLI's own config package): "auths" entries ("auth", "username"/"password",
// "identitytoken", "registrytoken"; keys written as hosts or URLs), and the
// credential helpers it names: credHelpers for that key, else credsStore,
// each run as docker-credential-<name> from PATH. helper reports whether a
// helper was asked, whose answers may expire (ECR, GCR, ACR tokens).
func dockerConfigCredentials(path string, keys []string) (c credentials, helper bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return credentials{}, false, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return credentials{}, false, fmt.Errorf("docker config %s: not a valid config", path)
	}
	for _, k := range keys {
		helper = helper || cf.CredentialsStore != "" || cf.CredentialHelpers[k] != ""
		a, err := cf.GetAuthConfig(k)
		if err != nil {
			// A helper's message may quote what it was given; keep it out.
			return credentials{}, helper, fmt.Errorf("docker config %s: credentials of %s: the credential helper failed", path, k)
		}
		c := credentials{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
		if c.anonymous() {
			continue
		}
		if c.IdentityToken != "" && c.Username == "" {
			c.Username = "<token>"
		}
		c.fromHelper = helper
		return c, helper, nil
	}
	return credentials{}, helper, nil
}

// hostOf returns the host of a config.json key written as a URL.
func hostOf(k string) string {
	k = strings.TrimPrefix(strings.TrimPrefix(k, "https://"), "http://")
	h, _, _ := strings.Cut(k, "/")
	return h
}
