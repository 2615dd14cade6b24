// Package version tells which berth this is. Release and image builds set
// Version and Revision with the linker:
//
//	go build -ldflags "-X github.com/berth-registry/berth/pkg/version.Version=v1.2.3 \
//	    -X github.com/berth-registry/berth/pkg/version.Revision=$(git rev-parse HEAD)" ./cmd/berth
//
// A plain `go build` or `go install` leaves them empty; Get then falls back
// to what the Go toolchain recorded in the binary (the module version of
// `go install ...@v1.2.3`, the VCS revision of a build in a git checkout).
package version

import (
	"runtime"
	"runtime/debug"
)

// Set by -ldflags -X at build time; empty otherwise.
var (
	Version  string
	Revision string
)

// Info is the version of the running binary.
type Info struct {
	Version   string `json:"version"`   // v1.2.3, or "dev"
	Revision  string `json:"revision"`  // the source's commit, or "unknown"
	GoVersion string `json:"goVersion"` // the Go toolchain that built it
}

// Get returns the version of the running binary: the values injected at
// build, else the build info the toolchain recorded, else "dev"/"unknown".
func Get() Info {
	i := Info{Version: Version, Revision: Revision, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if i.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			i.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && i.Revision == "" {
				i.Revision = s.Value
			}
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	if i.Revision == "" {
		i.Revision = "unknown"
	}
	return i
}

// String is the one line `berth version` prints.
func (i Info) String() string {
	return "berth " + i.Version + " (revision " + i.Revision + ", " + i.GoVersion + ")"
}
