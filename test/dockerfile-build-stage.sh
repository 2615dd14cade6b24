#!/usr/bin/env bash
# dockerfile-build-stage.sh runs the Dockerfile's build stage on the host, so
# CI proves its commands work where no Docker engine is available. It reads
# the stage named "build" from the Dockerfile itself (ARG defaults, ENV, RUN
# lines, in order) so the two cannot drift, and runs each RUN line with sh in
# the repository root (the build context). ARG values can be overridden from
# the environment, like --build-arg; OUT defaults to a temp dir here instead of
# /out. It then checks the binary is static, trimmed and stripped, and that the
# final stage copies the path the build wrote, runs as non-root, exposes the
# ports and starts `berth serve` on its config file (listening on :5000),
# that the binary reports the VERSION and REVISION it was built with, and that
# the base images are pinned by digest.
#
#   test/dockerfile-build-stage.sh            # KEEP=1 keeps the output dir
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dockerfile="$repo/Dockerfile"
work=$(mktemp -d)
if [ "${KEEP:-}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
: "${OUT:=$work/out}"
export OUT

# Join continuation lines, drop comments and blank lines.
logical() {
  sed -e 's/\r$//' "$dockerfile" | awk '
    /^[[:space:]]*#/ { next }
    { line = line $0 }
    /\\$/ { sub(/\\$/, "", line); next }
    { if (line ~ /[^[:space:]]/) print line; line = "" }'
}

stage=$(logical | awk 'toupper($1) == "FROM" { inbuild = (tolower($NF) == "build" && toupper($(NF-1)) == "AS"); next } inbuild')
[ -n "$stage" ] || { echo "dockerfile: no 'FROM ... AS build' stage" >&2; exit 1; }

ran=0
while IFS= read -r line; do
  instr=$(printf '%s' "$line" | awk '{print toupper($1)}')
  rest=$(printf '%s' "$line" | sed -E 's/^[[:space:]]*[A-Za-z]+[[:space:]]+//')
  case "$instr" in
    ARG)
      name=${rest%%=*}
      if [ -z "${!name:-}" ] && [[ "$rest" == *=* ]]; then export "$name=${rest#*=}"; fi
      echo "dockerfile: ARG $name=${!name:-}" ;;
    ENV)
      # ENV k=v [k=v...]; values without spaces (keep them so).
      for kv in $rest; do export "${kv?}"; echo "dockerfile: ENV $kv"; done ;;
    RUN)
      echo "dockerfile: RUN $rest"
      (cd "$repo" && sh -ec "$rest")
      ran=$((ran + 1)) ;;
    WORKDIR|COPY)
      echo "dockerfile: $instr $rest (the repository is the context)" ;;
    *)
      echo "dockerfile: build stage has $instr, which this script cannot run" >&2; exit 1 ;;
  esac
done <<<"$stage"
[ "$ran" -gt 0 ] || { echo "dockerfile: the build stage has no RUN line" >&2; exit 1; }

bin="$OUT/berth"
[ -x "$bin" ] || { echo "dockerfile: the build stage wrote no $bin" >&2; exit 1; }
info=$(go version -m "$bin")
for want in "CGO_ENABLED=0" "-trimpath=true"; do
  grep -qF -- "$want" <<<"$info" || { echo "dockerfile: binary lacks build setting $want" >&2; echo "$info" >&2; exit 1; }
done
if command -v file >/dev/null && ! file "$bin" | grep -q 'statically linked'; then
  echo "dockerfile: $bin is not statically linked: $(file "$bin")" >&2; exit 1
fi
# -trimpath keeps -ldflags out of the build info: check the stripping itself.
if go tool nm "$bin" >/dev/null 2>&1; then
  echo "dockerfile: $bin has a symbol table; want -ldflags='-s -w'" >&2; exit 1
fi
"$bin" --help >/dev/null
# The version the build was given is the one the binary reports.
want="berth ${VERSION:-dev} (revision ${REVISION:-unknown}, "
got=$("$bin" --version)
[[ "$got" == "$want"* ]] || { echo "dockerfile: --version says '$got', want '$want...'" >&2; exit 1; }
# The image's config file is valid and listens on every address at :5000,
# so `docker run -p 5000:5000` reaches berth.
"$bin" config validate "$OUT/config.yaml" >/dev/null
grep -qx '  addr: ":5000"' "$OUT/config.yaml" || { echo "dockerfile: the image config does not listen on :5000" >&2; cat "$OUT/config.yaml" >&2; exit 1; }
# Every base image is pinned by digest (a tag alone moves).
for img in $(logical | awk 'toupper($1) == "ARG" && $2 ~ /_IMAGE=/ { sub(/^[^=]*=/, "", $2); print $2 }'); do
  [[ "$img" =~ @sha256:[0-9a-f]{64}$ ]] || { echo "dockerfile: base image $img is not pinned by digest" >&2; exit 1; }
done
[ -s "$repo/LICENSE" ] || { echo "dockerfile: no LICENSE" >&2; exit 1; }

final=$(logical | awk 'toupper($1) == "FROM" { n++ } n >= 2 && toupper($1) != "FROM"' | tail -n +1)
check() { grep -Eq "$1" <<<"$final" || { echo "dockerfile: final stage lacks $2" >&2; exit 1; }; }
check '^COPY --from=build /out/berth /usr/local/bin/berth$' "the binary the build stage writes to /out/berth"
check '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' "a non-root numeric USER"
check '^EXPOSE .*5000/tcp' "EXPOSE 5000/tcp"
check '^EXPOSE .*7946/tcp.*7946/udp' "EXPOSE 7946/tcp and 7946/udp"
check '^ENTRYPOINT \["/usr/local/bin/berth", "serve"\]$' "ENTRYPOINT berth serve"
check 'org\.opencontainers\.image\.source=' "OCI labels"
check 'org\.opencontainers\.image\.licenses="Apache-2\.0"' "the license label"
check '^COPY --from=build /out/config\.yaml /etc/berth/config\.yaml$' "the image config file"
check '^CMD \["--config", "/etc/berth/config\.yaml"\]$' "CMD --config /etc/berth/config.yaml"
echo "dockerfile: build stage ok ($ran RUN lines): $bin"
