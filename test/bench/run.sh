#!/usr/bin/env bash
# Benchmarks berth against nginx and distribution's registry in proxy mode,
# everything on 127.0.0.1. Not run by CI.
#
#   test/bench/run.sh                         # all three scenarios
#   test/bench/run.sh -scenario cached -cached-reps 7
#   BERTH_REV=<commit> test/bench/run.sh      # berth built from that commit (default HEAD)
#
# berth is built from a clean export of the commit (not the work tree); the
# bench program (test/bench, build tag "bench") from the work tree. Flags
# after the script name go to the bench program (-h lists them).
set -euo pipefail
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
[ -x .tools/bin/registry ] || bash test/tools.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bench.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rev=${BERTH_REV:-HEAD}
mkdir -p "$work/src"
git archive "$rev" | tar -x -C "$work/src"
echo "berth $(git rev-parse --short "$rev"), $(nproc) cores, $(go version | cut -d' ' -f3)"
(cd "$work/src" && go build -trimpath -o "$work/berth" ./cmd/berth)
go build -tags bench -o "$work/bench" ./test/bench
timeout --signal=TERM --kill-after=30s "${BENCH_TIMEOUT:-45m}" \
	"$work/bench" -berth "$work/berth" -registry "$root/.tools/bin/registry" \
	-nginx "$(command -v nginx || echo /usr/sbin/nginx)" -work "$work" "$@" &
pid=$!
wait "$pid"
pid=
