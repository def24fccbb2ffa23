# syntax=docker/dockerfile:1
# certmgr: one static binary in a distroless, non-root image.
#
# The image holds no nginx, on purpose: `nginx -t` must be run by the same
# nginx that will load the file. In Kubernetes the certmgr containers run the
# app's own image (the proxy's image, so the very same nginx binary and
# /etc/nginx) with this image mounted read-only as an image volume at
# /opt/certmgr; the binary is /opt/certmgr/usr/local/bin/certmgr. Reloads reach
# the proxy container through pods/exec. See docs/deploy.md and deploy/.
#
# The build step is the Makefile's `build` target, so `make build` on a
# workstation and this image compile the binary the same way (static,
# CGO_ENABLED=0, -trimpath, stripped).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    make build BIN=/out/certmgr

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="certmgr" \
      org.opencontainers.image.description="Let's Encrypt certificates for custom domains, served by nginx, driven by Celery tasks" \
      org.opencontainers.image.source="https://github.com/midsummer/certmgr"
COPY --from=build /out/certmgr /usr/local/bin/certmgr
# distroless's nonroot user, numeric so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/certmgr"]
CMD ["worker"]
