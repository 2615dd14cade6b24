# syntax=docker/dockerfile:1
# berth: a pull-through caching OCI registry mirror.
#
#   docker build -t berth .
#   docker run -p 5000:5000 -e BERTH_LISTEN_ADDR=:5000 berth
#
# The build stage's ARG, ENV and RUN lines are also run on the host by
# test/dockerfile-build-stage.sh in CI, so keep them plain shell.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG OUT=/out
# -buildvcs=false: the build context has no .git (see .dockerignore).
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
WORKDIR /src
# Dependencies first: this layer stays cached until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags='-s -w' -o "$OUT/berth" ./cmd/berth
# The working directory of the final image, owned by the non-root user.
RUN mkdir -p "$OUT/data"

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="Pull-through caching OCI registry mirror for Kubernetes nodes" \
      org.opencontainers.image.source="https://github.com/berth-registry/berth" \
      org.opencontainers.image.url="https://github.com/berth-registry/berth" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=build /out/berth /usr/local/bin/berth
COPY --from=build --chown=65532:65532 /out/data /var/lib/berth
WORKDIR /var/lib/berth
USER 65532:65532
# 5000: registry API, /metrics, /healthz, /readyz (plain HTTP); 5443: HTTPS
# when listen.tls is set; 7946: gossip between nodes (TCP and UDP).
EXPOSE 5000/tcp 5443/tcp 7946/tcp 7946/udp
ENTRYPOINT ["/usr/local/bin/berth", "serve"]
