#!/usr/bin/env bash
# Benchmarks berth against distribution's registry in proxy mode and the
# reference (a direct GET or pull from the upstream, nginx serving the same
# bytes), everything on 127.0.0.1, and prints one table of every figure.
#
#   test/bench/run.sh                                   # the full suite (~10 min on 2 cores)
#   test/bench/run.sh -json bench.json -svg docs/bench.svg
#   test/bench/run.sh -figures hit,manifest -rounds 5   # some figures only
#   test/bench/run.sh -smoke -json out.json             # CI: tiny, one round, ~1-2 min
#   BERTH_REV=<commit> test/bench/run.sh                # berth built from that commit (default HEAD)
#
# berth is built from a clean export of the commit (not the work tree; outside
# a git checkout, from the tree) with CGO_ENABLED=0, as the Makefile and the
# Dockerfile build it (peak RSS at rest 17.9-18.6 MiB here, a cgo build 19.7-19.9);
# the bench program (test/bench, build tag
# "bench") from the work tree. Flags after the script name go to the bench
# program (-h lists them). Needs root for the containerd figure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
tools=${BERTH_TOOLS:-$root/.tools}
[ -x "$tools/bin/registry" ] || BERTH_TOOLS="$tools" bash test/tools.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$work/src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	rev=${BERTH_REV:-HEAD}
	git archive "$rev" | tar -x -C "$work/src"
	rev=$(git rev-parse --short "$rev")
	src="$work/src"
else
	rev="work tree"
	src="$root"
fi
echo "berth $rev, $(nproc) cores, $(go version | cut -d' ' -f3)"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$work/berth" ./cmd/berth)
go build -tags bench -o "$work/bench" ./test/bench
CGO_ENABLED=0 go build -trimpath -o "$work/gofloor" ./test/bench/gofloor
timeout --signal=TERM --kill-after=30s "${BENCH_TIMEOUT:-45m}" \
	"$work/bench" -berth "$work/berth" -registry "$tools/bin/registry" \
	-gofloor "$work/gofloor" -nginx "$(command -v nginx || echo /usr/sbin/nginx)" -wrk "$(command -v wrk || echo wrk)" \
	-containerd "$(command -v containerd || echo containerd)" -ctr "$(command -v ctr || echo ctr)" \
	-containerd2 "$tools/containerd2/bin" \
	-work "$work" -rev "$rev" -command "test/bench/run.sh${*:+ $*}" "$@" &
pid=$!
wait "$pid"
pid=
