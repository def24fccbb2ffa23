# certmgr's commands. `make test` is the README's test command and what .ci/run
# calls; it installs and starts the peers first (scripts/setup-peers.sh).
GO      ?= go
BIN     ?= bin/certmgr
IMAGE   ?= certmgr:dev
TESTFLAGS ?= -timeout 25m

.PHONY: all build test test-short bench demo lint staticcheck peers fuzz image manifests clean

all: lint build test

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN) ./cmd/certmgr

peers:
	scripts/setup-peers.sh

test: peers lint
	$(GO) test $(TESTFLAGS) ./...

# Quick loop while editing: no peer setup, no lint.
test-short:
	$(GO) test -short ./...

# Benchmarks are measured, never asserted: the report goes to docs/benchmarks.md.
bench: peers build
	scripts/bench.sh

demo: peers build
	scripts/demo.sh

lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# staticcheck is part of lint (lint:ignore comments give the reasons where it
# is overruled): its first build takes about 3 minutes on the 2-core CI
# machine, later runs about 15 s from the build cache.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
staticcheck:
	$(GO) run $(STATICCHECK) ./...

# Ten seconds of each fuzz target; corpora live in the packages' testdata/fuzz.
fuzz:
	scripts/fuzz.sh 10s

image:
	docker build -t $(IMAGE) .

manifests:
	kubectl kustomize deploy/overlays/sidecar
	kubectl kustomize deploy/overlays/standalone
	kubectl kustomize deploy/overlays/fleet

clean:
	rm -rf bin
