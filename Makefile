# dialsync. The README's two commands: `make demo` and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
# What `dialsync version` prints (cmd/dialsync/version.go).
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
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
# stream of realistic changes, and the notices with their latency. It stops
# the MariaDB it started when it ends; `make demo DEMO_FLAGS=-keep` leaves it
# running (then `make clean` stops it). A server already answering on 3307 is
# reused as it is and never stopped.
DEMO_FLAGS ?=
demo: services build
	$(GO) run ./cmd/demo $(DEMO_FLAGS)

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

# Stops the demo MariaDB running from .state (and only that one) before
# deleting its data.
clean:
	@bash scripts/demo-mariadb.sh stop
	rm -rf bin .state
