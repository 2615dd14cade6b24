package chart

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// charts/berth/README.md is what helm-docs renders from values.yaml and
// README.md.gotmpl (test/chart/gen-readme.sh): a changed value or comment
// without a regenerated README fails here. Every value is in the README's
// table, itself or under a documented parent.
func TestChartReadmeIsGenerated(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(filepath.Dir(helmBin(t)), "helm-docs")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("helm-docs not found (run test/tools.sh): %v", err)
		}
		t.Skipf("helm-docs not found (run test/tools.sh): %v", err)
	}
	abs, err := filepath.Abs(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--dry-run", "--chart-search-root", ".", "--template-files", "README.md.gotmpl", "--log-level", "warning")
	cmd.Dir = abs
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm-docs: %v\n%s", err, errb.String())
	}
	have, err := os.ReadFile(filepath.Join(abs, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != strings.TrimSpace(string(have)) {
		t.Errorf("charts/berth/README.md is stale: run test/chart/gen-readme.sh (helm-docs renders %d bytes, the file has %d)", out.Len(), len(have))
	}

	// rows: the table's keys that have a description.
	rows := map[string]bool{}
	for _, line := range strings.Split(out.String(), "\n") {
		m := regexp.MustCompile(`^\| ([^ |]+) \|`).FindStringSubmatch(line)
		if m == nil || !strings.HasSuffix(line, " |") {
			continue
		}
		cells := strings.Split(strings.TrimSuffix(line, " |"), " | ")
		rows[m[1]] = strings.TrimSpace(cells[len(cells)-1]) != ""
	}
	b, err := os.ReadFile(filepath.Join(abs, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	var undocumented []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		for p := prefix; p != ""; p = parent(p) {
			if rows[p] {
				return
			}
		}
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			for k, sub := range m {
				walk(strings.TrimPrefix(prefix+"."+k, "."), sub)
			}
			return
		}
		undocumented = append(undocumented, prefix)
	}
	walk("", values)
	sort.Strings(undocumented)
	if len(undocumented) > 0 {
		t.Errorf("values without a \"# --\" comment, so not in the README: %s", strings.Join(undocumented, ", "))
	}
}

func parent(path string) string {
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}
