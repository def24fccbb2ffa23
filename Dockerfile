# syntax=docker/dockerfile:1
# certmgr: a static binary in a distroless, non-root image.
#
# nginx -t must run with the same nginx that serves: certmgr does not ship an
# nginx of its own. In the sidecar layout the pod sets shareProcessNamespace
# and certmgr checks and reloads through the proxy container (see deploy/).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/certmgr ./cmd/certmgr

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/certmgr /usr/local/bin/certmgr
USER nonroot:nonroot
EXPOSE 9102
ENTRYPOINT ["/usr/local/bin/certmgr"]
CMD ["worker"]
