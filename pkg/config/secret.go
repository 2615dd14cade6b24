package config

import (
	"bytes"
	"fmt"
	"os"
)

// MinSecretLen is the shortest cluster secret accepted, in bytes, white
// space around it not counted: memberlist's smallest AES key (berth
// derives the gossip and marker keys from the secret with SHA-256).
const MinSecretLen = 16

// ReadSecret reads the cluster secret file: its contents, white space
// around them trimmed. A secret shorter than MinSecretLen is an error: an
// empty one would leave gossip unencrypted and peer markers forgeable.
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peers.secretFile: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("peers.secretFile: %s holds a %d-byte secret, want at least %d bytes (e.g. head -c 32 /dev/urandom | base64)", path, len(b), MinSecretLen)
	}
	return b, nil
}

// CheckFiles reads the files the configuration names whose contents
// Validate cannot judge: today the cluster secret, when peers are on.
// Resolve calls it after Validate, for `berth config validate` and
// `berth serve`.
func (c *Config) CheckFiles() error {
	if c.Peers.Bind == "" || c.Peers.SecretFile == "" {
		return nil
	}
	_, err := ReadSecret(c.Peers.SecretFile)
	return err
}
