# Container targets of shippy-rs. Included by the root Makefile:
#
#     include deploy/make/docker.mk
#
# Defines: build, up, down, lint (listed by the root `help` through their `## ` comments),
# plus the helper pattern target image-<service>. It does not define demo, test or help.
#
#   make build                      # shippy/{consignment,vessel,user,gateway,cli}:$(VERSION)
#   make build SERVICE=gateway      # one image
#   make build VERSION=dev          # the tags deploy/k8s/overlays/local expects
#   make build DOCKER=podman        # engine: docker if its engine answers, else podman
#   make up                         # docker compose up -d --wait (needs SHIPPY_JWT_SECRET)
#   make up ETCD_CLUSTER=1          # ... with the 3-node etcd of deploy/compose/etcd-cluster.yml
#   make down                       # DOWN_FLAGS=-v also removes the etcd/MongoDB volumes
#   make lint                       # deploy/lint.sh: static checks, no Docker engine needed

# Repository root, from this file's location (works whatever the including Makefile's cwd).
DOCKER_MK_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/../..)

# The container engine: `docker` when a Docker engine answers, otherwise `podman` (which builds
# the same Dockerfile), otherwise empty and the targets say so. DOCKER=podman or DOCKER=docker
# chooses. Probed once, and only by the targets that use it.
ifeq ($(origin DOCKER),undefined)
DOCKER = $(eval DOCKER := $(shell if docker info >/dev/null 2>&1; then echo docker; \
           elif command -v podman >/dev/null 2>&1; then echo podman; fi))$(DOCKER)
endif
# The Rust builder image; empty = the Dockerfile's default (the official rust:<version>-bookworm).
# deploy/test-containers.sh sets a locally built stand-in where no registry is reachable.
RUST_IMAGE ?=
IMAGE_PREFIX ?= shippy

# Images and their gRPC ports come from services/catalog.toml, the one table of services (`name:port`
# rows), plus the cli image, which has no port; the optional `http_port` of a service that also
# serves HTTP (the gateway) as `name:http_port` rows. deploy/Dockerfile refuses ports that disagree.
docker_catalog_rows := $(shell awk '/^name *=/ { n = $$0; sub(/^name *= *"/, "", n); sub(/".*$$/, "", n) } /^port *=/ { p = $$0; sub(/^port *= */, "", p); sub(/[^0-9].*$$/, "", p); print n ":" p }' '$(DOCKER_MK_ROOT)/services/catalog.toml')
docker_catalog_http_rows := $(shell awk '/^name *=/ { n = $$0; sub(/^name *= *"/, "", n); sub(/".*$$/, "", n) } /^http_port *=/ { p = $$0; sub(/^http_port *= */, "", p); sub(/[^0-9].*$$/, "", p); print n ":" p }' '$(DOCKER_MK_ROOT)/services/catalog.toml')
DOCKER_SERVICES := $(foreach row,$(docker_catalog_rows),$(firstword $(subst :, ,$(row)))) cli
$(foreach row,$(docker_catalog_rows),$(eval DOCKER_PORT_$(firstword $(subst :, ,$(row))) := $(lastword $(subst :, ,$(row)))))
$(foreach row,$(docker_catalog_http_rows),$(eval DOCKER_HTTP_PORT_$(firstword $(subst :, ,$(row))) := $(lastword $(subst :, ,$(row)))))
DOCKER_PORT_cli :=
SERVICE ?= $(DOCKER_SERVICES)

# [workspace.package] fields of Cargo.toml (VERSION read once; the label fields only when building).
docker_cargo_field = $(shell sed -n '/^\[workspace\.package\]/,/^\[/s/^$(1) *= *"\([^"]*\)".*/\1/p' '$(DOCKER_MK_ROOT)/Cargo.toml' 2>/dev/null | head -n 1)
ifeq ($(origin VERSION),undefined)
VERSION := $(or $(call docker_cargo_field,version),0.1.0)
endif
DOCKER_SOURCE = $(call docker_cargo_field,repository)
DOCKER_LICENSES = $(call docker_cargo_field,license)
DOCKER_REVISION = $(or $(shell git -C '$(DOCKER_MK_ROOT)' rev-parse --short HEAD 2>/dev/null),unknown)

DOCKER_BUILD_FLAGS ?=
COMPOSE_FILES := docker-compose.yml $(if $(ETCD_CLUSTER),deploy/compose/etcd-cluster.yml)
COMPOSE_UP_FLAGS ?= -d --wait
DOWN_FLAGS ?= --remove-orphans
# `docker compose` (plugin) or the standalone `docker-compose`; evaluated only when used.
COMPOSE ?= $(shell if $(DOCKER) compose version >/dev/null 2>&1; then echo '$(DOCKER) compose'; \
             elif command -v docker-compose >/dev/null 2>&1; then echo docker-compose; fi)
# $(call docker_compose,ENV=VALUE ...): the compose command line, run from the repository root.
docker_compose = cd '$(DOCKER_MK_ROOT)' && $(1) SHIPPY_VERSION='$(VERSION)' $(COMPOSE) $(addprefix -f ,$(COMPOSE_FILES))

.PHONY: build up down lint

# Shell snippets run at the start of recipes: one sentence and a non-zero exit when something
# is missing (this machine and CI have only the docker client, no engine). $(1) = the goal.
docker_need_engine = test -n "$(DOCKER)" || { echo "make $(1) needs a container engine, but no Docker engine answers (docker info) and podman is not installed: start Docker, or install podman (apt-get install podman)." >&2; exit 1; }; \
	command -v $(DOCKER) >/dev/null 2>&1 || { echo "make $(1) needs $(DOCKER), but the '$(DOCKER)' command was not found." >&2; exit 1; }; \
	$(DOCKER) info >/dev/null 2>&1 || { echo "make $(1) needs a working $(DOCKER) engine, but '$(DOCKER) info' failed." >&2; exit 1; }
docker_need_compose = test -n "$(COMPOSE)" || { echo "make $(1) needs Docker Compose, but neither '$(DOCKER) compose' nor 'docker-compose' works here." >&2; exit 1; }

# podman builds OCI images by default, and the OCI image format has no HEALTHCHECK: podman would
# drop it (with a warning); --format docker keeps it, as `docker build` does.
build: $(addprefix image-,$(SERVICE)) ## Build images shippy/<svc>:<VERSION> from deploy/Dockerfile (all five, or SERVICE=vessel)

image-%:
	@case ' $(DOCKER_SERVICES) ' in *' $* '*) ;; *) echo "make build: unknown SERVICE '$*'; use one of: $(DOCKER_SERVICES)." >&2; exit 2 ;; esac
	@$(call docker_need_engine,build)
	cd '$(DOCKER_MK_ROOT)' && DOCKER_BUILDKIT=1 $(DOCKER) build -f deploy/Dockerfile \
	  --build-arg SERVICE=$* \
	  --build-arg PORT=$(DOCKER_PORT_$*) \
	  $(if $(DOCKER_HTTP_PORT_$*),--build-arg HTTP_PORT=$(DOCKER_HTTP_PORT_$*)) \
	  --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$(DOCKER_REVISION) \
	  $(if $(RUST_IMAGE),--build-arg RUST_IMAGE=$(RUST_IMAGE)) \
	  $(if $(DOCKER_SOURCE),--build-arg SOURCE=$(DOCKER_SOURCE)) \
	  $(if $(DOCKER_LICENSES),--build-arg 'LICENSES=$(DOCKER_LICENSES)') \
	  $(if $(filter podman,$(notdir $(DOCKER))),--format docker) \
	  -t $(IMAGE_PREFIX)/$*:$(VERSION) $(DOCKER_BUILD_FLAGS) .

up: ## Start etcd, MongoDB, the services and the gateway (http://localhost:8080) with Docker Compose (ETCD_CLUSTER=1: 3-node etcd)
	@$(call docker_need_engine,up)
	@$(call docker_need_compose,up)
	$(call docker_compose) up $(COMPOSE_UP_FLAGS)

down: ## Stop and remove the Compose containers (DOWN_FLAGS=-v also drops volumes)
	@$(call docker_need_engine,down)
	@$(call docker_need_compose,down)
	$(call docker_compose,SHIPPY_JWT_SECRET="$${SHIPPY_JWT_SECRET:-not-needed-for-down}") down $(DOWN_FLAGS)

lint: ## Static checks of deploy/ (hadolint, compose spec, kustomize + k8s schemas, drift); no Docker engine needed
	bash '$(DOCKER_MK_ROOT)/deploy/lint.sh'
