# shippy-rs: `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
CARGO ?= cargo

# The etcd-client crate's build script needs protoc; this finds or installs one (see the script).
WITH_PROTOC = PROTOC="$$(scripts/ensure-protoc.sh)"

.PHONY: help bins demo test test-deps check fmt ci bench chaos

# Images, compose and the static checks of deploy/: build, up, down, lint.
include deploy/make/docker.mk

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

bins: ## Build every binary (debug)
	$(WITH_PROTOC) $(CARGO) build --workspace --bins

demo: bins ## Start all services and the REST gateway on the embedded defaults, run the CLI story and one curl
	scripts/demo.sh

test-deps: ## Install what the tests need: protoc, etcd, Prometheus and Chromium (Debian), the FerretDB test server and Jaeger (Go), oidc-provider (npm), an OpenAPI validator (PyPI)
	@scripts/ensure-protoc.sh >/dev/null
	@scripts/install-etcd.sh
	@scripts/build-ferretdb.sh
	@scripts/build-jaeger.sh
	@scripts/install-prometheus.sh
	@scripts/install-oidc-provider.sh
	@scripts/install-browser.sh
	@scripts/install-openapi-validator.sh

test: test-deps bins ## Run every test (unit, integration, end to end)
	$(WITH_PROTOC) $(CARGO) test --workspace --no-fail-fast

.PHONY: test-containers
test-containers: ## Build the images and run the compose stack for real (podman + Docker Compose; installs both)
	bash deploy/test-containers.sh

bench: test-deps ## Start-up, throughput, latency, memory, telemetry overhead and runtime size of the release binaries (prints numbers)
	$(WITH_PROTOC) $(CARGO) build --release --workspace --bins
	BENCH_STATIC_BIN_DIR="$$(bash scripts/build-static.sh)" $(WITH_PROTOC) $(CARGO) run --release -q -p shippy-system-tests --example bench

# `make chaos` runs the release binaries from here: the vessel built with the test-only fault switch
# (`fault-injection`: SIGUSR1 makes it fail every call), the others linked to the ordinary build.
CHAOS_BIN := target/release/chaos

chaos: ## Failed calls, p99 and recovery under restarts, kills, freezes, faults, overload, a routing shift and etcd outages (release; takes a few minutes)
	$(WITH_PROTOC) $(CARGO) build --release -p shippy-vessel --features fault-injection
	mkdir -p $(CHAOS_BIN)
	cp target/release/shippy-vessel $(CHAOS_BIN)/shippy-vessel
	$(WITH_PROTOC) $(CARGO) build --release --workspace --bins
	for bin in shippy shippy-user shippy-consignment; do ln -sf ../$$bin $(CHAOS_BIN)/$$bin; done
	SHIPPY_BIN_DIR=$(CURDIR)/$(CHAOS_BIN) CHAOS_LOG_DIR=target/chaos-logs $(WITH_PROTOC) $(CARGO) run --release -q -p shippy-system-tests --example chaos

check: ## cargo fmt --check and clippy -D warnings
	$(CARGO) fmt --all --check
	$(WITH_PROTOC) $(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

ci: check lint test ## What CI runs
