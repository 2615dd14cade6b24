#!/usr/bin/env bash
# pin-base-images.sh prints the Dockerfile's base image ARG lines with the
# current digest of each image's tag, to paste into the Dockerfile when
# moving to newer bases. It asks the registries (network access, crane).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -E '^ARG [A-Z_]+_IMAGE=' Dockerfile | while IFS= read -r line; do
  var=${line#ARG }; var=${var%%=*}
  ref=${line#*=}; ref=${ref%@*}
  echo "ARG $var=$ref@$(crane digest "$ref")"
done
