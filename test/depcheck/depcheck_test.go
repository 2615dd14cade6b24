// Package depcheck pins the direction of berth's imports: cmd → pkg/server
// → pkg/registry → pkg/mirror → {cache, peer, pkg/upstream} → pkg/oci. A
// lower package that imports a higher one (or a sibling it must not know)
// fails here, as go-containerregistry's depcheck does. pkg/registry and
// pkg/mirror name their sources by interface only: the request value (and
// its hop count) is pkg/oci's, so neither reaches pkg/upstream or peer;
// pkg/server wires them.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/berth-registry/berth/"

// forbidden lists, per package, the berth packages it must not reach,
// directly or through others.
var forbidden = map[string][]string{
	"pkg/oci":       {"*"},
	"pkg/config":    {"*"},
	"pkg/metrics":   {"*"},
	"pkg/hoststoml": {"*"},
	"pkg/version":   {"*"},
	"cache":         {"peer", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/server", "cmd/berth"},
	"peer":          {"cache", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/server", "cmd/berth"},
	"pkg/upstream":  {"cache", "peer", "pkg/mirror", "pkg/registry", "pkg/server", "cmd/berth"},
	"pkg/auth":      {"cache", "peer", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/server", "cmd/berth"},
	"pkg/mirror":    {"pkg/upstream", "peer", "pkg/registry", "pkg/server", "cmd/berth"},
	"pkg/registry":  {"pkg/upstream", "peer", "pkg/server", "cmd/berth"},
	"pkg/server":    {"cmd/berth"},
	"pkg/airgap":    {"peer", "pkg/upstream", "pkg/mirror", "pkg/registry", "pkg/server", "cmd/berth"},
}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", mod+pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestImportsPointDown(t *testing.T) {
	t.Parallel()
	// The control: the list is real, so an empty one cannot pass.
	if d := deps(t, "pkg/server"); !strings.Contains(strings.Join(d, " "), mod+"pkg/registry") {
		t.Fatalf("pkg/server does not reach pkg/registry: go list gave %d packages", len(d))
	}
	for pkg, bad := range forbidden {
		for _, dep := range deps(t, pkg) {
			rel, ok := strings.CutPrefix(dep, mod)
			if !ok || rel == pkg {
				continue
			}
			for _, b := range bad {
				if b == "*" || rel == b || strings.HasPrefix(rel, b+"/") {
					t.Errorf("%s imports %s: imports must point down", pkg, rel)
				}
			}
		}
	}
}
