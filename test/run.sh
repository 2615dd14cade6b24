#!/usr/bin/env bash
# run.sh is berth's one test command, for a fresh machine (root or sudo):
# it installs the test tools (test/tools.sh), checks gofmt and go vet, then
# runs every Go test, the end-to-end tests with real clients included, with
# the race detector, and the benchmark suite once in smoke mode. It exits
# non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

export BERTH_TOOLS="${BERTH_TOOLS:-$PWD/.tools}"
export PATH="$BERTH_TOOLS/bin:$PATH"

start=$(date +%s)
echo "run: tools"
bash test/tools.sh

echo "run: gofmt"
# The tracked Go files (all of them in a fresh clone); outside git, every one.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  unformatted=$(git ls-files -z '*.go' | xargs -0 -r gofmt -l)
else
  unformatted=$(find . -path ./.tools -prune -o -name '*.go' -print0 | xargs -0 -r gofmt -l)
fi
if [ -n "$unformatted" ]; then
  echo "run: gofmt wants changes in:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "run: go vet"
go vet ./...

echo "run: Dockerfile build stage"
# No Docker engine here: run the build stage's own commands on the host.
bash test/dockerfile-build-stage.sh

echo "run: go test"
go test -race -count=1 -timeout 60m ./...

echo "run: bench smoke"
# The benchmark suite once, with tiny blobs and one round: it still runs
# every figure and writes a well-formed report. No figure is judged here
# (timings on a CI machine are not measurements; test/bench/run.sh is).
bench_out=$(mktemp -d)
BENCH_TIMEOUT=10m bash test/bench/run.sh -smoke -json "$bench_out/bench.json" -svg "$bench_out/bench.svg"
go run -tags bench ./test/bench -verify "$bench_out/bench.json" -svg "$bench_out/bench.svg"
rm -rf "$bench_out"

echo "run: fuzz"
# go test above replayed every fuzz target's checked-in corpus
# (testdata/fuzz/); here each target also explores for a few seconds.
grep -rl --include='*_test.go' '^func Fuzz' --exclude-dir=.tools . | sort | while read -r f; do
  for name in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | cut -d' ' -f2); do
    echo "run: fuzz $name ($(dirname "$f"))"
    go test -run '^$' -fuzz "^${name}\$" -fuzztime 5s "$(dirname "$f")"
  done
done

echo "run: all passed in $(( $(date +%s) - start ))s"
