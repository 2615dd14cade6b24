# syntax=docker/dockerfile:1
# berth: a pull-through caching OCI registry mirror.
#
#   docker build -t berth --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
#   docker run -p 5000:5000 berth       # listens on :5000, caches in /var/lib/berth
#
# Reproducible: the binary is built with -trimpath and no VCS stamping, so the
# same source and toolchain give the same bytes; BuildKit takes the image's
# timestamps from the SOURCE_DATE_EPOCH build argument (add
# --output type=image,rewrite-timestamp=true for the layers' file times too).
#
# The base images are pinned by digest; scripts/pin-base-images.sh prints the
# current digests of their tags (it needs network access and crane).
#
# The build stage's ARG, ENV and RUN lines are also run on the host by
# test/dockerfile-build-stage.sh in CI, so keep them plain shell.

ARG GO_IMAGE=golang:1.26@sha256:3aff6657219a4d9c14e27fb1d8976c49c29fddb70ba835014f477e1c70636647
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG OUT=/out
ARG VERSION=dev
ARG REVISION=unknown
# -buildvcs=false: the build context has no .git (see .dockerignore); the
# revision comes in as REVISION instead.
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORKDIR /src
# Dependencies first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags="-s -w -X github.com/berth-registry/berth/pkg/version.Version=$VERSION -X github.com/berth-registry/berth/pkg/version.Revision=$REVISION" -o "$OUT/berth" ./cmd/berth
# The cache directory of the final image, owned by the non-root user.
RUN mkdir -p "$OUT/data"
# The image's config file: the embedded default, listening on every address
# (a container's loopback is its own) with the cache in /var/lib/berth.
RUN printf 'listen:\n  addr: ":5000"\ncache:\n  dir: /var/lib/berth\n' >"$OUT/config.yaml"

FROM ${BASE_IMAGE}
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="Pull-through caching OCI registry mirror for Kubernetes nodes" \
      org.opencontainers.image.source="https://github.com/berth-registry/berth" \
      org.opencontainers.image.url="https://github.com/berth-registry/berth" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY LICENSE /usr/share/doc/berth/LICENSE
COPY --from=build /out/berth /usr/local/bin/berth
COPY --from=build /out/config.yaml /etc/berth/config.yaml
COPY --from=build --chown=65532:65532 /out/data /var/lib/berth
WORKDIR /var/lib/berth
USER 65532:65532
# 5000: registry API, /metrics, /healthz, /readyz (plain HTTP); 5443: HTTPS
# when listen.tls is set; 7946: gossip between nodes (TCP and UDP).
EXPOSE 5000/tcp 5443/tcp 7946/tcp 7946/udp
ENTRYPOINT ["/usr/local/bin/berth", "serve"]
# BERTH_* variables override this file; `docker run berth --config FILE` or
# the chart's own args replace it.
CMD ["--config", "/etc/berth/config.yaml"]
