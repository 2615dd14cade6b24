package clientconf

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// K3sDefault is the registries.yaml mirror name that matches every
// registry without one of its own, as hosts.toml's _default does.
const K3sDefault = "*"

// k3sName maps berth's catch-all name to k3s's.
func k3sName(name string) string {
	if name == "_default" {
		return K3sDefault
	}
	return name
}

// k3sDefaultEndpoint is the endpoint k3s (containerd) falls back to for a
// registry after its listed endpoints: https://NAME, Docker Hub's API host
// for docker.io.
func k3sDefaultEndpoint(name string) string {
	if name == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + name
}

// K3sRegistries returns existing (a k3s or RKE2 registries.yaml, nil for
// none) with berth as the first endpoint of each registry's mirror. The
// mirror's other endpoints, rewrites, the configs section, every other
// registry and the comments stay (the file is edited as a YAML node tree).
// A mirror berth adds for a registry whose server is not k3s's default
// endpoint (https://NAME) lists that server after berth, as the fallback.
// "_default" is written "*", k3s's catch-all.
func K3sRegistries(existing []byte, mirror string, regs []Registry) ([]byte, error) {
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	berth := u.String()
	var doc yaml.Node
	if err := yaml.Unmarshal(existing, &doc); err != nil {
		return nil, fmt.Errorf("registries.yaml: %w", err)
	}
	if doc.Kind == 0 {
		doc = yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode}}}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("registries.yaml: the document is not a mapping: %w", ErrInvalid)
	}
	mirrors, err := mapEntry(root, "mirrors")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, r := range regs {
		name := k3sName(r.Name)
		if seen[name] {
			return nil, fmt.Errorf("registry %s: listed twice: %w", r.Name, ErrInvalid)
		}
		seen[name] = true
		fresh := lookupKey(mirrors, name) == nil
		m, err := mapEntry(mirrors, name)
		if err != nil {
			return nil, err
		}
		ep, err := seqEntry(m, "endpoint")
		if err != nil {
			return nil, err
		}
		// berth first; the operator's endpoints after it, as they were
		// (their nodes kept, comments and all).
		endpoints := []*yaml.Node{{Kind: yaml.ScalarNode, Tag: "!!str", Value: berth, Style: yaml.DoubleQuotedStyle}}
		for _, n := range ep.Content {
			if n.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("registries.yaml: mirrors.%s.endpoint holds a non-string: %w", name, ErrInvalid)
			}
			if strings.TrimRight(n.Value, "/") != berth {
				endpoints = append(endpoints, n)
			}
		}
		if fresh && r.Server != "" && name != K3sDefault && strings.TrimRight(r.Server, "/") != k3sDefaultEndpoint(name) {
			if _, err := serverURL(r); err != nil {
				return nil, err
			}
			endpoints = append(endpoints, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: r.Server, Style: yaml.DoubleQuotedStyle})
		}
		if len(ep.Content) == 0 {
			ep.Style = yaml.FlowStyle
		}
		ep.Content = endpoints
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("registries.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("registries.yaml: %w", err)
	}
	return b.Bytes(), nil
}

// CheckK3sRegistries reports why the registries.yaml content would not
// send each registry's pulls to berth at mirror first.
func CheckK3sRegistries(content []byte, mirror string, regs []Registry) ([]string, error) {
	u, err := mirrorURL(mirror)
	if err != nil {
		return nil, err
	}
	var file struct {
		Mirrors map[string]struct {
			Endpoint []string `yaml:"endpoint"`
		} `yaml:"mirrors"`
	}
	if err := yaml.Unmarshal(content, &file); err != nil {
		return nil, fmt.Errorf("registries.yaml: %w", err)
	}
	var problems []string
	for _, r := range regs {
		name := k3sName(r.Name)
		m, ok := file.Mirrors[name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: no mirrors.%q entry: its pulls do not go through berth", r.Name, name))
		case len(m.Endpoint) == 0 || strings.TrimRight(m.Endpoint[0], "/") != u.String():
			problems = append(problems, fmt.Sprintf("%s: berth (%s) is not the first endpoint of mirrors.%q (%q)", r.Name, u, name, m.Endpoint))
		}
	}
	return problems, nil
}

// lookupKey returns the value node of key in a mapping node, or nil.
func lookupKey(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// mapEntry returns the mapping under key, adding an empty one when key is
// absent or null.
func mapEntry(m *yaml.Node, key string) (*yaml.Node, error) {
	return entry(m, key, yaml.MappingNode)
}

// seqEntry returns the sequence under key, adding an empty one when key is
// absent or null.
func seqEntry(m *yaml.Node, key string) (*yaml.Node, error) {
	return entry(m, key, yaml.SequenceNode)
}

func entry(m *yaml.Node, key string, kind yaml.Kind) (*yaml.Node, error) {
	v := lookupKey(m, key)
	if v == nil {
		v = &yaml.Node{Kind: kind}
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
		return v, nil
	}
	if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
		*v = yaml.Node{Kind: kind}
		return v, nil
	}
	if v.Kind != kind {
		return nil, fmt.Errorf("registries.yaml: %q is not a %s: %w", key, map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}[kind], ErrInvalid)
	}
	return v, nil
}
