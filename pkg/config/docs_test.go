package config

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// TestDocs keeps README.md whole: every field and every variable is
// documented, and its example file parses and validates.
func TestDocs(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	paths := map[string]bool{}
	leafPaths(reflect.ValueOf(Config{}), "", false, paths)
	for p := range paths {
		if !strings.Contains(doc, "| `"+p+"` |") {
			t.Errorf("README.md has no table row for field %s", p)
		}
	}
	for _, v := range EnvVars() {
		if !strings.Contains(doc, "| `"+v.Name+"` | `"+v.Path+"`") {
			t.Errorf("README.md has no table row for %s (%s)", v.Name, v.Path)
		}
	}
	// The YAML examples of the Configuration section are whole config files;
	// other sections show other tools' files (k3s registries.yaml, ...).
	section := doc[strings.Index(doc, "\n## Configuration"):]
	if end := strings.Index(section[1:], "\n## "); end > 0 {
		section = section[:end+1]
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(section, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no yaml example")
	}
	for _, blk := range blocks {
		cfg, err := Parse([]byte(blk[1]))
		if err != nil {
			t.Errorf("example does not parse: %v", err)
			continue
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("example does not validate: %v", err)
		}
	}
}
