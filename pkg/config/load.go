package config

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultYAML returns the embedded default configuration file, comments
// included: what `berth config default` prints. The caller owns the slice.
func DefaultYAML() []byte { return bytes.Clone(defaultYAML) }

// Default returns the embedded default configuration, parsed. Each call
// returns a new Config that the caller may change. An error means the
// embedded file is broken, a bug caught by this package's tests.
func Default() (*Config, error) {
	cfg := new(Config)
	if _, err := decode(defaultYAML, cfg); err != nil {
		return nil, fmt.Errorf("embedded default: %w", err)
	}
	return cfg, nil
}

// embedded is the embedded default, parsed once.
var embedded = sync.OnceValue(func() *Config {
	cfg, err := Default()
	if err != nil {
		panic(err) // a broken embedded file: this package's tests catch it
	}
	return cfg
})

// Defaults returns the embedded default's values: the one source of every
// setting's default. Packages whose zero options mean "the default" (the
// mirror's tag TTL, the store's fill timeout and watermarks, the peers'
// timeouts) read it here, so default.yaml and the code cannot disagree.
// The caller may change the copy it gets, but not its lists.
func Defaults() Config { return *embedded() }

// Load reads and parses the YAML file at path; see Parse. It does not
// validate: call Validate once env and flags are applied.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse parses a YAML configuration file strictly and lays it over the
// embedded default: a setting the file leaves out keeps its default value,
// and a list the file sets (registries, peers.join) replaces the default list
// whole. A key with no value (null) leaves a scalar at its default and makes
// a list empty. When the file sets registries but not defaultRegistry, the
// default's defaultRegistry is kept only if the file's list still names it,
// otherwise it becomes "" (requests naming no registry are refused).
//
// Unknown fields, values of the wrong type, bad durations, duplicate keys and
// more than one YAML document are errors; every one found is reported
// (joined), each with its line and field path. An empty file gives the
// default. Parse does not validate the values: see Validate.
func Parse(data []byte) (*Config, error) {
	cfg, err := Default()
	if err != nil {
		return nil, err
	}
	top, err := decode(data, cfg)
	if err != nil {
		return nil, err
	}
	if top["registries"] && !top["defaultRegistry"] && cfg.registry(cfg.DefaultRegistry) < 0 {
		cfg.DefaultRegistry = ""
	}
	return cfg, nil
}

// Marshal encodes cfg as YAML that Parse reads back to an equal Config.
func Marshal(cfg *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("marshal config: %w", err)
	}
	return buf.Bytes(), nil
}

// registry returns the index of the registry called name, or -1.
func (c *Config) registry(name string) int {
	for i, r := range c.Registries {
		if r.Name == name {
			return i
		}
	}
	return -1
}

// decode lays the single YAML document in data over cfg and returns the
// top-level keys it set.
func decode(data []byte, cfg *Config) (map[string]bool, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil // empty file or only comments
	} else if err != nil {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err == nil {
			return nil, fmt.Errorf("line %d: a config file holds one YAML document", extra.Line)
		}
		return nil, err
	}
	// The walk decodes each value alone, so every problem is known by its
	// node (line and field path), and all are reported at once; after it
	// nothing is left for the whole decode to find.
	var s schemaCheck
	s.check(&doc, reflectType(cfg), "")
	if err := s.err(); err != nil {
		return nil, err
	}
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(cfg); err != nil {
		return nil, err
	}
	return topKeys(&doc), nil
}

func topKeys(doc *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	if n := resolve(doc); n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			keys[n.Content[i].Value] = true
		}
	}
	return keys
}

// lineError is one problem in a file, at a line.
type lineError struct {
	line int
	path string
	msg  string
}

func (e lineError) Error() string {
	if e.path == "" {
		return fmt.Sprintf("line %d: %s", e.line, e.msg)
	}
	return fmt.Sprintf("line %d: %s: %s", e.line, e.path, e.msg)
}

func (s *schemaCheck) err() error {
	sort.SliceStable(s.errs, func(i, j int) bool { return s.errs[i].line < s.errs[j].line })
	errs := make([]error, len(s.errs))
	for i, e := range s.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
