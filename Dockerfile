# Tracklink: one static binary, run as node (default) or `hub`.
#   docker build --build-arg VERSION=1.0.0 --build-arg COMMIT=$(git rev-parse --short HEAD) -t tracklink .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/tracker ./cmd/tracker

# The final image holds the binary and nothing else: no shell, no package
# manager. The health check is the binary itself (`tracker healthcheck`).
FROM scratch
COPY --from=build /out/tracker /tracker
# CA roots, for rediss:// to a Redis with a public certificate (a private
# CA: TRACKER_REDIS_CA_FILE, mounted).
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
USER 65532:65532
# A node serves HTTP and UDP on 6969; the hub (`hub`) serves its public
# page, /status and /metrics on 6968/tcp (the compose files publish it on
# the host's loopback). Replicas on the host's network take ports of a
# range instead (TRACKER_HTTP_ADDR=:6969-6971). The health check knows
# which: it asks the port of TRACKER_HTTP_ADDR, or the default of the role
# of the container's process.
EXPOSE 6969/tcp 6969/udp 6968/tcp
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/tracker", "healthcheck"]
ENTRYPOINT ["/tracker"]
