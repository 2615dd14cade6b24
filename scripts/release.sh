#!/usr/bin/env bash
# release.sh builds berth's release binaries: static (CGO_ENABLED=0),
# reproducible (-trimpath, no VCS stamping, file times from
# SOURCE_DATE_EPOCH) linux/amd64 and linux/arm64 binaries with the version
# and revision injected, and a SHA256SUMS file over them.
#
#   scripts/release.sh                  # or: make release
#   VERSION=v1.2.3 DIST=out scripts/release.sh
#   PLATFORMS="linux/amd64" scripts/release.sh
#
# VERSION defaults to `git describe --tags --always --dirty`, REVISION to the
# commit, SOURCE_DATE_EPOCH to the commit's time. The same source, VERSION,
# REVISION and Go toolchain give byte-identical files; check with
#   (cd dist && sha256sum -c SHA256SUMS)
set -euo pipefail
cd "$(dirname "$0")/.."

git_or() { git "$@" 2>/dev/null || true; }
: "${VERSION:=$(git_or describe --tags --always --dirty)}"
: "${VERSION:=dev}"
: "${REVISION:=$(git_or rev-parse HEAD)}"
: "${REVISION:=unknown}"
: "${SOURCE_DATE_EPOCH:=$(git_or log -1 --format=%ct)}"
: "${SOURCE_DATE_EPOCH:=0}"
: "${DIST:=dist}"
: "${PLATFORMS:=linux/amd64 linux/arm64}"

pkg=github.com/berth-registry/berth/pkg/version
ldflags="-s -w -buildid= -X $pkg.Version=$VERSION -X $pkg.Revision=$REVISION"

mkdir -p "$DIST"
files=()
for p in $PLATFORMS; do
  os=${p%/*}; arch=${p#*/}
  name="berth-$VERSION-$os-$arch"
  echo "release: $name"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags="$ldflags" -o "$DIST/$name" ./cmd/berth
  touch -d "@$SOURCE_DATE_EPOCH" "$DIST/$name"
  files+=("$name")
done
(cd "$DIST" && sha256sum "${files[@]}" >SHA256SUMS && touch -d "@$SOURCE_DATE_EPOCH" SHA256SUMS)
echo "release: $DIST/SHA256SUMS"
cat "$DIST/SHA256SUMS"
