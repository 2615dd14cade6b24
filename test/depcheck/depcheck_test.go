// Package depcheck pins the direction of berth's imports: cmd → pkg/server
// → pkg/registry → pkg/mirror → {cache, peer, pkg/upstream} → pkg/oci. A
// lower package that imports a higher one (or a sibling it must not know)
// fails here, as go-containerregistry's depcheck does. pkg/registry and
// pkg/mirror name their sources by interface only: the request value (and
// its hop count) is pkg/oci's, so neither reaches pkg/upstream or peer;
// pkg/server wires them.
//
// The lists are the graph as it is, not a bound it may grow into: every
// berth package is listed with the berth packages it may reach (directly or
// through others), so a new edge, or a new package, is a decision made here.
package depcheck

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/berth-registry/berth/"

// leaves are the packages that sit under everything else.
var leaves = []string{"pkg/oci", "pkg/config", "pkg/metrics"}

// allowed lists, per package, every berth package it may reach.
var allowed = map[string][]string{
	"pkg/oci":        nil,
	"pkg/config":     nil,
	"pkg/metrics":    nil,
	"pkg/version":    nil,
	"pkg/hoststoml":  {"pkg/config"}, // its one host validator
	"pkg/idle":       nil,
	"pkg/clientconf": {"pkg/oci"},
	"pkg/auth":       {"pkg/config", "pkg/oci"},
	"cache":          leaves,
	"peer":           append([]string{"pkg/idle"}, leaves...),
	"pkg/upstream":   append([]string{"pkg/idle"}, leaves...),
	"pkg/airgap":     append([]string{"cache"}, leaves...),
	"pkg/mirror":     append([]string{"cache"}, leaves...),
	"pkg/registry":   append([]string{"cache", "pkg/mirror"}, leaves...),
	"pkg/server": append([]string{"cache", "peer", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/auth", "pkg/airgap", "pkg/version",
		"pkg/idle"}, leaves...),
	"cmd/berth": append([]string{"pkg/server", "cache", "peer", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/auth", "pkg/airgap",
		"pkg/version", "pkg/hoststoml", "pkg/idle", "pkg/clientconf"}, leaves...),
}

// goList runs go list with args and returns its output's fields.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	out, err := exec.Command("go", append([]string{"list"}, args...)...).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", strings.Join(args, " "), err)
	}
	return strings.Fields(string(out))
}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	return goList(t, "-deps", "-f", "{{.ImportPath}}", mod+pkg)
}

func TestImportsPointDown(t *testing.T) {
	t.Parallel()
	// The control: the list is real, so an empty one cannot pass.
	if d := deps(t, "pkg/server"); !strings.Contains(strings.Join(d, " "), mod+"pkg/registry") {
		t.Fatalf("pkg/server does not reach pkg/registry: go list gave %d packages", len(d))
	}
	for pkg, ok := range allowed {
		for _, dep := range deps(t, pkg) {
			rel, berth := strings.CutPrefix(dep, mod)
			if !berth || rel == pkg {
				continue
			}
			if !slices.Contains(ok, rel) {
				t.Errorf("%s imports %s: imports must point down (a new edge is added to this test's list)", pkg, rel)
			}
		}
	}
}

// TestEveryPackageIsListed fails on a package of the module that the list
// does not name, so no package escapes the check.
func TestEveryPackageIsListed(t *testing.T) {
	t.Parallel()
	pkgs := goList(t, mod+"cmd/...", mod+"pkg/...", mod+"cache/...", mod+"peer/...")
	if len(pkgs) < len(allowed) {
		t.Fatalf("go list gave %d packages, fewer than the %d listed", len(pkgs), len(allowed))
	}
	for _, p := range pkgs {
		if _, ok := allowed[strings.TrimPrefix(p, mod)]; !ok {
			t.Errorf("%s is not in the import list: add it with what it may import", p)
		}
	}
}
