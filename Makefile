# dialsync. The README's two commands: `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
export CGO_ENABLED ?= 0

.PHONY: all build test test-go test-deploy vet services demo bench bench-short bench-10x chaos clean fmt

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/dialsync ./cmd/dialsync

services:
	@bash scripts/services.sh

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...

# Everything CI runs: servers up (installed if missing), vet, all Go tests
# (unit, golden, integration against real servers, crash/restart), the
# deploy artifact checks.
test: services vet build
	$(GO) test -count=1 -timeout 30m ./...
	bash deploy/check.sh
	bash clients/typescript/test.sh

# The demo: a private binlog-enabled MariaDB on 127.0.0.1:3307 with the demo
# data, dialsync against it and the machine's PostgreSQL/Redis/NATS, a
# stream of realistic changes, and the notices with their latency.
demo: services build
	$(GO) run ./cmd/demo

bench: services build
	$(GO) run ./cmd/bench

bench-short: services build
	$(GO) run ./cmd/bench -short

# 10x data (500k users, 1.5M claims, 3M requirements): reconcile and
# catch-up, compared with bench/results/latest.json; not in CI (seeding
# alone takes minutes). Results: bench/results/10x.{json,md}.
bench-10x: services build
	$(GO) run ./cmd/bench -users 500000 -scenarios reconcile,catchup

chaos: services build
	$(GO) test -count=1 -timeout 80m -run TestChaos -v ./internal/dev/chaos -chaos.long

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin .state
