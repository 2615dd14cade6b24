// Package e2e holds berth's end-to-end tests: the built berth binary
// between real clients (containerd, skopeo, crane, helm, oras) and a real
// upstream (distribution's registry binary), all on loopback addresses.
//
// The tests need the tools that test/tools.sh installs. A missing tool
// skips the tests that need it, except under CI=true, where it fails them.
// Run them with test/run.sh, or alone with
//
//	BERTH_TOOLS=$PWD/.tools go test -race -count=1 ./test/e2e/
//
// BERTH_E2E_BIN=path tests that berth binary instead of building ./cmd/berth.
package e2e
