# Shortcuts; each target is one command you can also run by hand.
.PHONY: build release test

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
PKG := github.com/berth-registry/berth/pkg/version

# build: ./berth for this machine, with the version injected.
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "-X $(PKG).Version=$(VERSION) -X $(PKG).Revision=$(REVISION)" -o berth ./cmd/berth

# release: static linux/amd64 and linux/arm64 binaries and SHA256SUMS in dist/.
release:
	VERSION=$(VERSION) REVISION=$(REVISION) scripts/release.sh

# test: what CI runs (installs the test tools first).
test:
	bash test/run.sh
