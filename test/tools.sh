#!/usr/bin/env bash
# tools.sh installs what the end-to-end tests and benchmarks need, once per
# machine: Debian packages (containerd, skopeo, nginx, ...) and pinned Go
# tools (distribution's registry, crane, oras, helm, crictl, helm-docs)
# built into $BERTH_TOOLS.
# Re-running it is cheap: a tool already built at its pinned version is kept.
set -euo pipefail

: "${BERTH_TOOLS:=$(cd "$(dirname "$0")/.." && pwd)/.tools}"
bin="$BERTH_TOOLS/bin"
mkdir -p "$bin"

apt_pkgs=(containerd runc skopeo podman crun uidmap nginx-light iproute2 iptables wrk apache2-utils chromium)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "tools: apt-get install ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# name  module@version  (the binary is named after the last path element)
go_tools=(
  "registry github.com/distribution/distribution/v3/cmd/registry@v3.0.0"
  "crane github.com/google/go-containerregistry/cmd/crane@v0.22.1"
  "oras oras.land/oras/cmd/oras@v1.3.6"
  "helm helm.sh/helm/v3/cmd/helm@v3.22.0"
  "crictl sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0"
  "helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2"
)
pids=()
for t in "${go_tools[@]}"; do
  name=${t%% *}; mod=${t#* }
  stamp="$bin/.$name.version"
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod" ]; then
    continue
  fi
  echo "tools: go install $mod"
  ( GOBIN="$bin" CGO_ENABLED=0 go install "$mod" && echo "$mod" >"$stamp" ) &
  pids+=($!)
done
# containerd 2.x (and its ctr) beside apt's 1.6, in a directory of its own so
# the names do not shadow 1.6 on PATH: it fetches layers with parallel Range
# requests, which the end-to-end tests point at berth.
ctrd2_mod="github.com/containerd/containerd/v2@v2.4.2"
ctrd2_bin="$BERTH_TOOLS/containerd2/bin"
if [ ! -x "$ctrd2_bin/containerd" ] || [ ! -x "$ctrd2_bin/ctr" ] || [ "$(cat "$ctrd2_bin/.version" 2>/dev/null)" != "$ctrd2_mod" ]; then
  echo "tools: go install $ctrd2_mod (containerd, ctr)"
  mkdir -p "$ctrd2_bin"
  ( GOBIN="$ctrd2_bin" CGO_ENABLED=0 go install \
      "github.com/containerd/containerd/v2/cmd/containerd@${ctrd2_mod#*@}" \
      "github.com/containerd/containerd/v2/cmd/ctr@${ctrd2_mod#*@}" &&
    echo "$ctrd2_mod" >"$ctrd2_bin/.version" ) &
  pids+=($!)
fi

rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
[ $rc -eq 0 ] || { echo "tools: a go install failed" >&2; exit 1; }
echo "tools: ready in $bin"
