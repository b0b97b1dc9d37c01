#!/usr/bin/env bash
# Container system test: builds the five images from deploy/Dockerfile, runs docker-compose.yml
# with the real Docker Compose client against podman's Docker-compatible API, and checks what a
# user of `make build` and `docker compose up` relies on. `make test-containers` runs it; so does
# .ci/run, after `make test`.
#
#   bash deploy/test-containers.sh        # as root (or with sudo): it installs podman
#
# What it sets up (each step is skipped when its result is already there, so a second run only
# rebuilds what changed):
#   - apt-get: podman, runc, netavark + aardvark-dns (service names in DNS), debootstrap
#   - .tools/bin/docker-compose: Docker Compose v5 built from its Go module (no compose plugin
#     or engine here; Compose is the same program whatever engine answers on DOCKER_HOST)
#   - `podman system service` on a private socket; DOCKER_HOST points Compose at it.
#     deploy/test/containers.conf (CONTAINERS_CONF) adapts podman 4.3 to hosts like CI's.
#   - stand-ins for the images no registry serves here, never tagged as the official names:
#       localhost/shippy-stand-in/debian:bookworm         debootstrap of bookworm, imported
#       localhost/shippy-stand-in/rust:<RUST_VERSION>-bookworm   deploy/test/rust.Containerfile,
#                                 passed to deploy/Dockerfile as --build-arg RUST_IMAGE=...
#       localhost/shippy-stand-in/etcd:3.4-bookworm       Debian's etcd-server
#       localhost/shippy-stand-in/ferretdb:1.24           the FerretDB test server (for mongo)
#       localhost/shippy-stand-in/prometheus:2.42-bookworm the host's Debian Prometheus
#                                 (scripts/install-prometheus.sh, as for the metrics tests)
#       localhost/shippy-stand-in/jaeger:2.13-bookworm    the Jaeger of the tracing tests
#                                 (scripts/build-jaeger.sh)
#     the last four through the override deploy/test/compose.stand-ins.yml.
#   - without systemd, podman has nothing that runs healthchecks on their interval; a
#     background loop does what podman's systemd timer would: `podman healthcheck run` per
#     container, first after its interval, then every interval (the container's own check).
#
# Checks: images (size <= 20 MB, uid 10001, nothing but one binary, CA certificates, passwd/group);
# `up --wait`: every container healthy through its healthcheck; services run as uid 10001 on a
# read-only root filesystem with the compose limits; the cli profile registers, logs in and
# submits consignment.json and gets a vessel; the REST gateway on its published host port (8080)
# registers, logs in, books consignment.json with a bearer token and lists it, serves
# /openapi.json and the console, and answers an unauthenticated call with 401 problem+json;
# --scale vessel=3 spreads FindAvailable calls over three containers (and the gateway's
# /v1/instances lists the three); the observability profile's Prometheus (started after the
# scaling) scrapes all six replicas through DNS discovery and holds their
# grpc_server_handled_total, and its Jaeger holds the whole trace of one
# `cli --trace consignment create` (cli, consignment, vessel); stopping one vessel container
# costs no failed call (and it exits 0).
# Prints the measured image sizes, the time from `up` to all healthy (and the gateway's own, from
# its start to its first passing healthcheck) and idle memory per container.
#
# Environment: SHIPPY_TEST_TAG (image tag, default dev), SHIPPY_TEST_KEEP=1 (leave the stack up),
# SHIPPY_TEST_WORK (state directory, default /var/tmp/shippy-test-containers),
# SHIPPY_GATEWAY_PORT (the gateway's host port; default 8080, or a free one when 8080 is taken).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

COMPOSE_VERSION="v5.6.0"   # v5.7.x needs go >= 1.26.10
TAG="${SHIPPY_TEST_TAG:-dev}"
PROJECT="shippy-test"
WORK="${SHIPPY_TEST_WORK:-/var/tmp/shippy-test-containers}"
STANDIN="localhost/shippy-stand-in"
IMAGES=(consignment vessel user gateway cli)
# The issue's goal. Token verification in every service (Ed25519 on ed25519-dalek, no general JWT
# crate with its RSA and NIST-curve code) and mimalloc fit within it.
MAX_IMAGE_MB=20
MEM_LIMIT_BYTES=$((100 * 1024 * 1024))
CPU_LIMIT_NANO=500000000
COMPOSE_BIN="$ROOT/.tools/bin/docker-compose"
export CONTAINERS_CONF="$ROOT/deploy/test/containers.conf"
export GOTOOLCHAIN=local

started=$SECONDS
passed=0
failed=0
declare -a MEASURED=()

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'test-containers: ERROR: %s\n' "$*" >&2; exit 1; }
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
bad() { failed=$((failed + 1)); printf 'FAIL %s\n' "$*"; }
measured() { MEASURED+=("$*"); printf 'measured %s\n' "$*"; }
# check DESCRIPTION CMD...: one ok/FAIL line.
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
as_root() { if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi; }
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1000000 }'; }

# wait_until SECONDS DESCRIPTION CMD...: polls CMD (every 0.5 s) until it succeeds; bounded.
wait_until() {
  local limit="$1" what="$2" deadline; shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      printf 'test-containers: gave up after %ss waiting for %s\n' "$limit" "$what" >&2
      return 1
    fi
    sleep 0.5
  done
}

# ------------------------------------------------------------------------------ tools
install_packages() {
  local pkgs=(podman runc netavark aardvark-dns debootstrap iptables) missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return
  command -v apt-get >/dev/null || die "needs ${missing[*]} and apt-get is not available"
  [[ "$(id -u)" == 0 ]] || command -v sudo >/dev/null || die "installing ${missing[*]} needs root (or sudo)"
  say "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 install -y \
    --no-install-recommends "${missing[@]}" >/dev/null
}

build_compose() {
  if [[ -x "$COMPOSE_BIN" && "$("$COMPOSE_BIN" version --short 2>/dev/null)" == "${COMPOSE_VERSION#v}" ]]; then
    return
  fi
  command -v go >/dev/null || die "go is needed to build Docker Compose"
  say "building Docker Compose $COMPOSE_VERSION from its Go module into .tools/bin (first time: ~2.5 min)"
  local tmp dir
  tmp="$(mktemp -d)"
  # A scratch module, so that `go mod download` has somewhere to record the download.
  (cd "$tmp" && go mod init shippy-compose-build >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go mod download "github.com/docker/compose/v5@$COMPOSE_VERSION")
  dir="$(cd "$tmp" && go list -m -f '{{.Dir}}' "github.com/docker/compose/v5@$COMPOSE_VERSION")"
  rm -rf "$tmp"
  [[ -f "$dir/go.sum" ]] || die "Docker Compose module not found in the module cache ($dir)"
  mkdir -p "$(dirname "$COMPOSE_BIN")"
  # Built inside the module's own directory: its go.mod and go.sum decide every dependency.
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
    -o "$COMPOSE_BIN.tmp" ./cmd)
  mv -f "$COMPOSE_BIN.tmp" "$COMPOSE_BIN"
}

# ------------------------------------------------------------------------------ podman API
SERVICE_PID=""
HEALTH_PID=""
start_podman_service() {
  mkdir -p "$WORK/run"
  local sock="$WORK/run/podman.sock"
  rm -f "$sock"
  podman system service --time=0 "unix://$sock" >"$WORK/run/podman-service.log" 2>&1 &
  SERVICE_PID=$!
  export DOCKER_HOST="unix://$sock"
  wait_until 30 "podman's API socket" "$COMPOSE_BIN" ls || die "podman system service did not answer (see $WORK/run/podman-service.log)"
}

# A Go duration as podman prints it (10s, 1m30s, 500ms) in whole seconds, at least 1.
duration_secs() {
  local d="$1" s=0
  if [[ "$d" =~ ^([0-9]+)m([0-9]+)(\.[0-9]+)?s$ ]]; then
    s=$((BASH_REMATCH[1] * 60 + BASH_REMATCH[2]))
  elif [[ "$d" =~ ^([0-9]+)(\.[0-9]+)?s$ ]]; then
    s=${BASH_REMATCH[1]}
  fi
  echo $((s > 0 ? s : 1))
}

# The scheduler podman leaves to systemd: for every container of the project that has a
# healthcheck, `podman healthcheck run` after its interval and then every interval. Stops by
# itself when the test ends or after an hour at most.
health_scheduler() {
  local -A due=() every=()
  local id interval secs now end=$((SECONDS + 3600))
  while ((SECONDS < end)) && kill -0 "$$" 2>/dev/null; do
    now=$SECONDS
    for id in $(podman ps -q --no-trunc --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null); do
      if [[ -z "${every[$id]:-}" ]]; then
        interval="$(podman inspect --format '{{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval}}{{end}}' "$id" 2>/dev/null || true)"
        secs=0
        [[ -n "$interval" && "$interval" != 0s ]] && secs="$(duration_secs "$interval")"
        every[$id]=$secs
        due[$id]=$((now + secs))
      fi
      ((every[$id] > 0 && now >= due[$id])) || continue
      podman healthcheck run "$id" >/dev/null 2>&1 || true
      due[$id]=$((SECONDS + every[$id]))
    done
    sleep 1
  done
}

# podman 4.3's Docker API reports a container's network by name where Docker reports the
# network's ID. Docker Compose compares the two, sees every running container as attached to
# the wrong network and recreates the whole stack on each `up` or `run`. So after the first
# `up`, the test passes --no-recreate (up) and --no-deps (run): what Docker users get anyway.
compose() {
  SHIPPY_VERSION="$TAG" "$COMPOSE_BIN" -p "$PROJECT" -f docker-compose.yml -f deploy/test/compose.stand-ins.yml "$@"
}

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -n "${DOCKER_HOST:-}" ]]; then
    say "state at failure:"
    compose ps -a 2>&1 | sed 's/^/  /' >&2 || true
    compose logs --no-color --tail 15 2>&1 | sed 's/^/  /' >&2 || true
    local id
    for id in $(project_ids --filter health=unhealthy 2>/dev/null); do
      say "$(name_of "$id"): last healthcheck results"
      podman inspect --format '{{range .State.Health.Log}}{{.Start}} exit {{.ExitCode}}: {{.Output}}{{println}}{{end}}' "$id" 2>&1 | tail -n 5 >&2 || true
      # The tail above may hide why it never became ready: its whole log (bounded).
      say "$(name_of "$id"): log"
      podman logs "$id" 2>&1 | tail -n 200 | sed 's/^/  /' >&2 || true
    done
  fi
  if [[ "${SHIPPY_TEST_KEEP:-}" == 1 ]]; then
    say "SHIPPY_TEST_KEEP=1: the stack stays up; DOCKER_HOST=$DOCKER_HOST, project $PROJECT"
  elif [[ -n "${DOCKER_HOST:-}" ]]; then
    compose --profile cli --profile observability down -v --remove-orphans --timeout 20 >/dev/null 2>&1 || true
  fi
  [[ -n "$HEALTH_PID" ]] && kill "$HEALTH_PID" 2>/dev/null
  if [[ -n "$SERVICE_PID" && "${SHIPPY_TEST_KEEP:-}" != 1 ]]; then
    kill "$SERVICE_PID" 2>/dev/null
  fi
  exit "$rc"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ stand-in images
image_label() { podman image inspect --format "{{index .Labels \"$2\"}}" "$1" 2>/dev/null || true; }

build_debian_base() {
  podman image exists "$STANDIN/debian:bookworm" && return
  say "debootstrap bookworm -> $STANDIN/debian:bookworm (first time: ~1.5 min)"
  local rootfs="$WORK/rootfs"
  as_root rm -rf "$rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  # As the official debian image: the updates and security suites, no service starts on install.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 0755 "$rootfs/usr/sbin/policy-rc.d"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$STANDIN/debian:bookworm" >/dev/null
  rm -rf "$rootfs"
}

# build_standin IMAGE CONTAINERFILE CONTEXT [BUILD ARGS...]: rebuilt when its inputs changed.
build_standin() {
  local image="$1" file="$2" ctx="$3" inputs; shift 3
  inputs="$( (cat "$file"; printf '%s\n' "$@"; find "$ctx" -type f -print0 | sort -z | xargs -0r cat) | sha256sum | cut -c1-16)"
  if [[ "$(image_label "$image" shippy.stand-in.inputs)" == "$inputs" ]]; then
    return
  fi
  say "building stand-in $image"
  podman build --format docker --pull=never --label "shippy.stand-in.inputs=$inputs" "$@" -f "$file" -t "$image" "$ctx" \
    >"$WORK/build-$(basename "$file").log" 2>&1 ||
    { tail -30 "$WORK/build-$(basename "$file").log" >&2; die "building $image failed"; }
}

RUST_VERSION="$(sed -n 's/^ARG RUST_VERSION=//p' deploy/Dockerfile | head -n1)"
RUST_STANDIN="$STANDIN/rust:$RUST_VERSION-bookworm"

build_standins() {
  build_debian_base
  # This host's own CA certificates (an intercepting HTTPS proxy's, for instance): rustup and
  # cargo inside the image build need them as much as they do on the host.
  local ctx="$WORK/ctx-rust"
  rm -rf "$ctx" && mkdir -p "$ctx/local-ca"
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$ctx/local-ca/"
  fi
  build_standin "$RUST_STANDIN" deploy/test/rust.Containerfile "$ctx" --build-arg "RUST_VERSION=$RUST_VERSION"
  mkdir -p "$WORK/ctx-empty"
  build_standin "$STANDIN/etcd:3.4-bookworm" deploy/test/etcd.Containerfile "$WORK/ctx-empty"
  local ferret
  ferret="$(scripts/build-ferretdb.sh)"
  rm -rf "$WORK/ctx-ferretdb" && mkdir -p "$WORK/ctx-ferretdb"
  cp "$ferret" "$WORK/ctx-ferretdb/ferretdb-test-server"
  build_standin "$STANDIN/ferretdb:1.24" deploy/test/ferretdb.Containerfile "$WORK/ctx-ferretdb"
  local prometheus
  prometheus="$(scripts/install-prometheus.sh | awk '{print $2}')"
  rm -rf "$WORK/ctx-prometheus" && mkdir -p "$WORK/ctx-prometheus"
  cp "$prometheus" "$(dirname "$prometheus")/promtool" "$WORK/ctx-prometheus/"
  build_standin "$STANDIN/prometheus:2.42-bookworm" deploy/test/prometheus.Containerfile "$WORK/ctx-prometheus"
  local jaeger
  jaeger="$(scripts/build-jaeger.sh)"
  rm -rf "$WORK/ctx-jaeger" && mkdir -p "$WORK/ctx-jaeger"
  cp "$jaeger" "$WORK/ctx-jaeger/jaeger"
  build_standin "$STANDIN/jaeger:2.13-bookworm" deploy/test/jaeger.Containerfile "$WORK/ctx-jaeger"
}

# ------------------------------------------------------------------------------ images
# The gRPC port of each service, from services/catalog.toml (the one table of services), read
# with the same awk as deploy/make/docker.mk (`name:port` rows); cli is no service and has none.
# Likewise the optional HTTP port (`http_port`: the gateway's).
declare -A CATALOG_PORT=() CATALOG_HTTP_PORT=()
while IFS=: read -r name port; do
  CATALOG_PORT[$name]="$port"
done < <(awk '/^name *=/ { n = $0; sub(/^name *= *"/, "", n); sub(/".*$/, "", n) } /^port *=/ { p = $0; sub(/^port *= */, "", p); sub(/[^0-9].*$/, "", p); print n ":" p }' services/catalog.toml)
while IFS=: read -r name port; do
  CATALOG_HTTP_PORT[$name]="$port"
done < <(awk '/^name *=/ { n = $0; sub(/^name *= *"/, "", n); sub(/".*$/, "", n) } /^http_port *=/ { p = $0; sub(/^http_port *= */, "", p); sub(/[^0-9].*$/, "", p); print n ":" p }' services/catalog.toml)
for svc in "${IMAGES[@]}"; do
  [[ "$svc" == cli || "${CATALOG_PORT[$svc]:-}" =~ ^[0-9]+$ ]] || die "services/catalog.toml gives no port for $svc"
done
[[ "${CATALOG_HTTP_PORT[gateway]:-}" =~ ^[0-9]+$ ]] || die "services/catalog.toml gives the gateway no http_port"
# port_of SERVICE [DEFAULT]: the service's gRPC port from the catalog (DEFAULT, or empty, for cli).
port_of() { echo "${CATALOG_PORT[$1]:-${2:-}}"; }
# http_port_of SERVICE: the service's HTTP port from the catalog (empty for all but the gateway).
http_port_of() { echo "${CATALOG_HTTP_PORT[$1]:-}"; }
# exposed_of SERVICE: how an image's EXPOSE of its ports reads, as podman lists them (sorted
# as strings): "50051/tcp ", "50054/tcp 8080/tcp ", nothing for cli.
exposed_of() {
  local p
  for p in $(port_of "$1") $(http_port_of "$1"); do echo "$p/tcp"; done | sort | tr '\n' ' '
}
bin_of() { if [[ "$1" == cli ]]; then echo shippy; else echo "shippy-$1"; fi; }

check_image() {
  local svc="$1" image="shippy/$1:$TAG" size mnt files bins user certs hc title ports env_port env_http
  size="$(podman image inspect --format '{{.Size}}' "$image")"
  measured "image $image: $(mb "$size") MB"
  check "image $image is at most $MAX_IMAGE_MB MB ($(mb "$size") MB)" test "$size" -le $((MAX_IMAGE_MB * 1000000))
  user="$(podman image inspect --format '{{.Config.User}}' "$image")"
  check "image $image runs as 10001:10001 (USER $user)" test "$user" = "10001:10001"
  title="$(podman image inspect --format '{{index .Labels "org.opencontainers.image.title"}}' "$image")"
  check "image $image: label org.opencontainers.image.title=$title" test "$title" = "shippy-$svc"
  ports="$(podman image inspect --format '{{range $p, $v := .Config.ExposedPorts}}{{$p}} {{end}}' "$image")"
  env_port="$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed -n 's/^SHIPPY_SERVER__PORT=//p')"
  env_http="$(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | sed -n 's/^SHIPPY_GATEWAY__HTTP__\(HOST\|PORT\)=//p' | tr '\n' ' ')"
  check "image $image: EXPOSE '${ports}', SHIPPY_SERVER__PORT=$env_port, SHIPPY_GATEWAY__HTTP__HOST/PORT '${env_http}'" \
    test "$ports|$env_port|$env_http" = "$(exposed_of "$svc")|$(port_of "$svc" 0)|$(if [[ -n "$(http_port_of "$svc")" ]]; then echo "0.0.0.0 $(http_port_of "$svc") "; fi)"
  hc="$(podman image inspect --format '{{if .HealthCheck}}{{range .HealthCheck.Test}}{{.}} {{end}}{{end}}' "$image")"
  check "image $image keeps its HEALTHCHECK ($hc)" test "$hc" = "CMD /usr/local/bin/app healthcheck "
  mnt="$(podman image mount "$image")"
  files="$(cd "$mnt" && find . ! -type d | sort | tr '\n' ' ')"
  bins="$(cd "$mnt" && find . -type f -perm -u+x | sort | tr '\n' ' ')"
  certs="$(grep -c 'BEGIN CERTIFICATE' "$mnt/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || echo 0)"
  if [[ "$svc" == cli ]]; then
    rm -f "$WORK/shippy" && cp "$mnt/usr/local/bin/shippy" "$WORK/shippy"
  fi
  podman image unmount "$image" >/dev/null
  local want
  want="./etc/group ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/app ./usr/local/bin/$(bin_of "$svc") "
  check "image $image holds one binary, CA certificates, passwd/group and nothing else ($files)" test "$files" = "$want"
  check "image $image: the one executable is $(bin_of "$svc") ($bins)" test "$bins" = "./usr/local/bin/$(bin_of "$svc") "
  check "image $image: CA bundle with $certs certificates" test "$certs" -gt 50
}

build_images() {
  local svc t
  for svc in "${IMAGES[@]}"; do
    say "make build SERVICE=$svc (podman, builder $RUST_STANDIN)"
    t=$SECONDS
    make --no-print-directory build SERVICE="$svc" VERSION="$TAG" DOCKER=podman RUST_IMAGE="$RUST_STANDIN" \
      >"$WORK/build-$svc.log" 2>&1 || { tail -40 "$WORK/build-$svc.log" >&2; die "make build SERVICE=$svc failed"; }
    measured "make build SERVICE=$svc: $((SECONDS - t)) s"
  done
}

# ------------------------------------------------------------------------------ stack checks
project_ids() { podman ps -q --no-trunc --filter "label=com.docker.compose.project=$PROJECT" "$@"; }
svc_of() { podman inspect --format '{{index .Config.Labels "com.docker.compose.service"}}' "$1"; }
name_of() { podman inspect --format '{{.Name}}' "$1"; }

all_healthy() {
  local id status n=0
  for id in $(project_ids); do
    status="$(podman inspect --format '{{.State.Health.Status}}' "$id")"
    [[ "$status" == healthy ]] || return 1
    n=$((n + 1))
  done
  ((n >= $1))
}

check_running_service() {
  local id="$1" name pid uid rootmnt mem quota period
  name="$(name_of "$id")"
  pid="$(podman inspect --format '{{.State.Pid}}' "$id")"
  uid="$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")"
  rootmnt="$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | head -n1)"
  mem="$(podman inspect --format '{{.HostConfig.Memory}}' "$id")"
  quota="$(podman inspect --format '{{.HostConfig.CpuQuota}}' "$id")"
  period="$(podman inspect --format '{{.HostConfig.CpuPeriod}}' "$id")"
  check "$name: process runs as uid 10001 (uid $uid)" test "$uid" = 10001
  check "$name: root filesystem mounted read-only ($rootmnt)" grep -qE '(^|,)ro(,|$)' <<<"$rootmnt"
  check "$name: memory limit 100 MiB ($mem bytes)" test "$mem" = "$MEM_LIMIT_BYTES"
  check "$name: CPU limit 0.5 (quota $quota / period $period)" test "$((quota * 1000000000 / (period > 0 ? period : 1)))" = "$CPU_LIMIT_NANO"
}

# FindAvailable calls answered by one vessel container so far.
vessel_calls() { podman logs "$1" 2>&1 | grep -c '"vessel found"' || true; }

host_cli() {
  SHIPPY_TOKEN_FILE="$TOKEN_FILE" "$WORK/shippy" --addr "$CONSIGNMENT_ADDR" "$@"
}

# ------------------------------------------------------------------------------ main
mkdir -p "$WORK"
install_packages
# Compose compiles (CPU) while debootstrap and the stand-ins mostly download.
build_compose >"$WORK/build-compose.log" 2>&1 &
compose_pid=$!
build_standins
wait "$compose_pid" || { tail -30 "$WORK/build-compose.log" >&2; die "building Docker Compose failed"; }
say "$("$COMPOSE_BIN" version), podman $(podman version --format '{{.Client.Version}}')"
build_images
for svc in "${IMAGES[@]}"; do check_image "$svc"; done

start_podman_service
health_scheduler &
HEALTH_PID=$!

export SHIPPY_JWT_SECRET
SHIPPY_JWT_SECRET="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The observability profile's host ports: free ones, so that a Prometheus or Jaeger already on
# this machine's 9090/16686/4317 does not fail the test (docker-compose.yml reads these).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export PROMETHEUS_PORT JAEGER_UI_PORT JAEGER_OTLP_PORT GRAFANA_PORT
PROMETHEUS_PORT="$(free_port)" JAEGER_UI_PORT="$(free_port)" JAEGER_OTLP_PORT="$(free_port)" GRAFANA_PORT="$(free_port)"
# The gateway's host port: compose's default (the catalog's http_port, 8080) unless something on
# this machine already listens there; then a free one, said so (the static checks hold the default).
port_taken() { python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", int(sys.argv[1])))' "$1" 2>/dev/null && return 1 || return 0; }
export SHIPPY_GATEWAY_PORT="${SHIPPY_GATEWAY_PORT:-$(http_port_of gateway)}"
if port_taken "$SHIPPY_GATEWAY_PORT"; then
  say "host port $SHIPPY_GATEWAY_PORT is taken on this machine: the gateway is published on a free one"
  SHIPPY_GATEWAY_PORT="$(free_port)"
fi
GATEWAY="http://127.0.0.1:$SHIPPY_GATEWAY_PORT"
compose --profile cli --profile observability down -v --remove-orphans >/dev/null 2>&1 || true

say "docker compose up -d --wait"
t0=$SECONDS
compose up -d --no-build --wait --wait-timeout 240 >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "compose up --wait failed"; }
up_secs=$((SECONDS - t0))
check "compose up --wait: etcd, mongo, consignment, vessel, user, gateway healthy" all_healthy 6
measured "time from up to all healthy: ${up_secs} s (healthchecks every 10 s, as configured)"
# The gateway's own start-up: from its container's start to its first passing healthcheck (its
# `healthcheck` probes gRPC health; the first probe runs one interval, 10 s, after the start).
gateway_id="$(project_ids --filter label=com.docker.compose.service=gateway | head -n1)"
gateway_healthy_after() {
  podman inspect "$gateway_id" | python3 -c '
import datetime, json, sys
state = json.load(sys.stdin)[0]["State"]
t = datetime.datetime.fromisoformat  # RFC 3339 with nanoseconds: Python >= 3.11 reads it
passed = [t(h["End"]) for h in state["Health"]["Log"] if h["ExitCode"] == 0]
print("%.1f s" % (min(passed) - t(state["StartedAt"])).total_seconds() if passed else "never")'
}
measured "gateway: container start to first passing healthcheck: $(gateway_healthy_after 2>&1 | tail -n1)"
for id in $(project_ids); do
  check "$(name_of "$id"): healthy through its own healthcheck ($(podman inspect --format '{{range .Config.Healthcheck.Test}}{{.}} {{end}}' "$id"))" \
    test "$(podman inspect --format '{{.State.Health.Status}}' "$id")" = healthy
done
for id in $(project_ids); do
  case "$(svc_of "$id")" in consignment | vessel | user | gateway) check_running_service "$id" ;; esac
done

say "idle memory: the container's memory cgroup (what the limit counts, podman stats) and the process RSS"
mapfile -t ALL < <(project_ids)
podman stats --no-stream --format '{{.Name}} {{.MemUsage}} {{.CPUPerc}}' "${ALL[@]}" | sort |
  while read -r name use _ limit cpu; do
    pid="$(podman inspect --format '{{.State.Pid}}' "$name")"
    rss="$(awk '/^VmRSS:/ { printf "%.1fMB", $2 * 1024 / 1000000 }' "/proc/$pid/status")"
    measured "idle $name: cgroup $use of limit $limit, RSS $rss, CPU $cpu"
  done

say "cli profile: user create, login, consignment create (consignment.json)"
cli_run() { compose run --rm --no-deps cli "$@" 2>>"$WORK/cli-run.log"; }
if out="$(cli_run user create --name Ada --email ada@example.com --company ACME --password s3cret1234)"; then
  ok "cli user create: $out"
else
  bad "cli user create: $out"
fi
# By what it says, not only its exit status: `compose run` has been seen to exit 0 for a CLI
# that failed.
if out="$(cli_run login --email ada@example.com --password s3cret1234)" && grep -q '^Logged in as ' <<<"$out"; then
  ok "cli login: $out"
else
  bad "cli login: $out"
fi
out="$(cli_run)" || true
if grep -qE 'Consignment created on vessel [A-Za-z0-9_-]+' <<<"$out"; then
  ok "cli (default command) submits consignment.json: $(grep -oE 'Consignment created on vessel [A-Za-z0-9_-]+' <<<"$out")"
else
  bad "cli (default command) did not book a vessel: $out"
fi

# The same CLI binary, taken out of the cli image (static), on the host against consignment's
# published loopback port, with the token `cli login` saved in the cli-home volume.
TOKEN_FILE="$(podman volume inspect --format '{{.Mountpoint}}' "${PROJECT}_cli-home")/.config/shippy/token"
CONSIGNMENT_ADDR="$(compose port consignment "$(port_of consignment)")"
check "consignment publishes $(port_of consignment) on loopback only ($CONSIGNMENT_ADDR)" grep -q '^127\.0\.0\.1:[0-9]\+$' <<<"$CONSIGNMENT_ADDR"
check "cli login saved a token in the cli-home volume" test -s "$TOKEN_FILE"
book() { host_cli consignment create consignment.json >/dev/null 2>&1; }
check "host CLI -> consignment on $CONSIGNMENT_ADDR" book

say "REST gateway on host port $SHIPPY_GATEWAY_PORT (curl): user, token, consignment.json, list, OpenAPI, console, 401"
# gw METHOD PATH [TOKEN] [BODY-FILE]: one call; prints "<status> <content-type>" on the first line,
# the body after it; the response headers land in $WORK/gw-headers.
gw() {
  local method="$1" path="$2" token="${3:-}" body="${4:-}"
  local args=(-sS -X "$method" -D "$WORK/gw-headers" -o "$WORK/gw-body" -w '%{http_code} %{content_type}\n' --max-time 15)
  [[ -n "$token" ]] && args+=(-H "Authorization: Bearer $token")
  [[ -n "$body" ]] && args+=(-H 'Content-Type: application/json' --data-binary "@$body")
  curl "${args[@]}" "$GATEWAY$path" && cat "$WORK/gw-body"
}
# json_get EXPR: evaluates a Python expression over the JSON body on stdin (`j`), prints it.
json_get() { python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
status_of() { head -n1 <<<"$1"; }
body_of() { tail -n +2 <<<"$1"; }
printf '%s' '{"name":"Grace","company":"ACME","email":"grace@example.com","password":"s3cret1234"}' >"$WORK/gw-user.json"
printf '%s' '{"email":"grace@example.com","password":"s3cret1234"}' >"$WORK/gw-login.json"
out="$(gw POST /v1/users "" "$WORK/gw-user.json" 2>&1)" || true
user_id="$(body_of "$out" | json_get 'j["user"]["id"]' 2>/dev/null)" || user_id=""
check "gateway: POST /v1/users -> $(status_of "$out"), user id ${user_id:-none}; password not echoed" \
  test "$(status_of "$out" | cut -d' ' -f1)|$(body_of "$out" | json_get 'j["user"]["password"] == "" and j["user"]["email"] == "grace@example.com"' 2>/dev/null)" = "200|True"
out="$(gw POST /v1/auth/token "" "$WORK/gw-login.json" 2>&1)" || true
gw_token="$(body_of "$out" | json_get 'j["token"] if j.get("valid") else ""' 2>/dev/null)" || gw_token=""
check "gateway: POST /v1/auth/token -> $(status_of "$out"), a token of ${#gw_token} characters" \
  test "$(status_of "$out" | cut -d' ' -f1)" = 200 -a -n "$gw_token"
out="$(gw POST /v1/consignments "$gw_token" consignment.json 2>&1)" || true
gw_vessel="$(body_of "$out" | json_get 'j["consignment"]["vessel_id"] if j.get("created") else ""' 2>/dev/null)" || gw_vessel=""
gw_consignment="$(body_of "$out" | json_get 'j["consignment"]["id"]' 2>/dev/null)" || gw_consignment=""
check "gateway: POST /v1/consignments (consignment.json, Bearer) -> $(status_of "$out"), booked on vessel ${gw_vessel:-none}" \
  test "$(status_of "$out" | cut -d' ' -f1)" = 200 -a -n "$gw_vessel"
check "gateway: every answer carries x-request-id" grep -qi '^x-request-id: .' "$WORK/gw-headers"
out="$(gw GET '/v1/consignments?page_size=50' "$gw_token" 2>&1)" || true
check "gateway: GET /v1/consignments -> $(status_of "$out"), lists consignment ${gw_consignment:-none} with vessel ${gw_vessel:-none}" \
  test "$(status_of "$out" | cut -d' ' -f1)|$(body_of "$out" | json_get "any(c['id'] == '$gw_consignment' and c['vessel_id'] == '$gw_vessel' for c in j['consignments'])" 2>/dev/null)" = "200|True"
out="$(gw GET /openapi.json 2>&1)" || true
check "gateway: GET /openapi.json -> $(status_of "$out"): an OpenAPI $(body_of "$out" | json_get 'j["openapi"]' 2>/dev/null || echo '?') document with POST /v1/consignments" \
  test "$(status_of "$out" | cut -d' ' -f1)|$(body_of "$out" | json_get 'j["openapi"].startswith("3.") and "post" in j["paths"]["/v1/consignments"]' 2>/dev/null)" = "200|True"
out="$(gw GET / 2>&1)" || true
check "gateway: GET / (console) -> $(status_of "$out") with Content-Security-Policy" \
  test "$(status_of "$out" | cut -d' ' -f1-2 | cut -d';' -f1)|$(grep -ci '^content-security-policy:' "$WORK/gw-headers")" = "200 text/html|1"
out="$(gw POST /v1/consignments "" consignment.json 2>&1)" || true
check "gateway: POST /v1/consignments without a token -> $(status_of "$out"), problem+json with code $(body_of "$out" | json_get 'j["code"]' 2>/dev/null || echo '?')" \
  test "$(status_of "$out" | cut -d';' -f1)|$(body_of "$out" | json_get 'j["status"] == 401 and j["code"] == "UNAUTHENTICATED" and bool(j["request_id"])' 2>/dev/null)" = "401 application/problem+json|True"

say "docker compose up -d --scale vessel=3"
compose up -d --no-build --no-recreate --wait --wait-timeout 240 --scale vessel=3 >"$WORK/scale.log" 2>&1 || { cat "$WORK/scale.log" >&2; die "compose up --scale vessel=3 failed"; }
mapfile -t VESSELS < <(project_ids --filter label=com.docker.compose.service=vessel)
healthy_vessels=0
for id in "${VESSELS[@]}"; do
  [[ "$(podman inspect --format '{{.State.Health.Status}}' "$id")" == healthy ]] && healthy_vessels=$((healthy_vessels + 1))
done
check "three vessel containers, all healthy (${#VESSELS[@]} running, $healthy_vessels healthy)" test "${#VESSELS[@]}|$healthy_vessels" = "3|3"
etcd_id="$(project_ids --filter label=com.docker.compose.service=etcd | head -n1)"
vessels_registered() {
  (($(podman exec "$etcd_id" etcdctl get --prefix --keys-only /shippy/services/vessel/ | grep -c .) == 3))
}
check "three vessel instances registered in etcd" wait_until 30 "3 vessels in etcd" vessels_registered
declare -A before=()
for id in "${VESSELS[@]}"; do before[$id]=$(vessel_calls "$id"); done
calls=12 fails=0
for ((i = 0; i < calls; i++)); do book || fails=$((fails + 1)); done
spread="" served=0
for id in "${VESSELS[@]}"; do
  n=$(($(vessel_calls "$id") - before[$id]))
  spread+="$(name_of "$id")=$n "
  ((n > 0)) && served=$((served + 1))
done
check "$calls consignments with 3 vessels: 0 failed ($fails)" test "$fails" = 0
check "FindAvailable calls spread over all three vessel containers ($spread)" test "$served" = 3
# The gateway's view of discovery (the console's instances panel): three vessel instances.
gateway_vessels() {
  curl -fsS --max-time 10 "$GATEWAY/v1/instances" | python3 -c '
import json, sys
print(sum(len(s["instances"]) for s in json.load(sys.stdin)["services"] if s["name"] == "vessel"))'
}
gateway_sees_three() { [[ "$(gateway_vessels)" == 3 ]]; }
wait_until 30 "3 vessels in the gateway's /v1/instances" gateway_sees_three || true
check "gateway: GET /v1/instances lists the three vessel instances ($(gateway_vessels 2>&1 | tail -n1))" gateway_sees_three

say "observability profile: Prometheus and Jaeger (stand-ins; Grafana has none here)"
t0=$SECONDS
compose --profile observability up -d --no-build --no-recreate --wait --wait-timeout 120 prometheus jaeger \
  >"$WORK/observability.log" 2>&1 || { cat "$WORK/observability.log" >&2; die "compose up prometheus jaeger failed"; }
measured "observability profile: prometheus + jaeger healthy in $((SECONDS - t0)) s"
PROM_ADDR="$(compose port prometheus 9090)"
JAEGER_ADDR="$(compose port jaeger 16686)"
check "prometheus and jaeger publish their UIs on loopback only ($PROM_ADDR, $JAEGER_ADDR)" \
  grep -qE '^127\.0\.0\.1:[0-9]+ 127\.0\.0\.1:[0-9]+$' <<<"$PROM_ADDR $JAEGER_ADDR"
# Healthy targets of job shippy per `service` label, e.g. "consignment=1 user=1 vessel=3".
prom_targets() {
  curl -fsS "http://$PROM_ADDR/api/v1/targets?state=active" | python3 -c '
import collections, json, sys
up = collections.Counter(t["labels"].get("service", "?") for t in json.load(sys.stdin)["data"]["activeTargets"]
                         if t["labels"].get("job") == "shippy" and t["health"] == "up")
print(" ".join(f"{k}={v}" for k, v in sorted(up.items())))'
}
targets_all_up() { [[ "$(prom_targets)" == "consignment=1 gateway=1 user=1 vessel=3" ]]; }
wait_until 90 "6 healthy targets in Prometheus" targets_all_up || true
check "Prometheus scrapes every replica through DNS discovery, all healthy ($(prom_targets 2>&1); want consignment=1 gateway=1 user=1 vessel=3)" targets_all_up
# Instances (one per replica) whose grpc_server_handled_total is above 0, per service.
prom_handled() {
  curl -fsS "http://$PROM_ADDR/api/v1/query" --data-urlencode 'query=sum by (service, instance) (grpc_server_handled_total) > 0' | python3 -c '
import collections, json, sys
n = collections.Counter(r["metric"].get("service", "?") for r in json.load(sys.stdin)["data"]["result"])
print(" ".join(f"{k}={v}" for k, v in sorted(n.items())))'
}
# The gateway's gRPC port serves only health: whether its health checks count there is not the
# point, so it may or may not appear.
handled_all() { [[ "$(prom_handled)" =~ ^consignment=1\ (gateway=1\ )?user=1\ vessel=3$ ]]; }
wait_until 30 "grpc_server_handled_total of every replica" handled_all || true
check "grpc_server_handled_total has samples from every replica ($(prom_handled 2>&1); want consignment=1 user=1 vessel=3, gateway optional)" handled_all
check "every target's instance label names its replica (service@address:9464)" test "$(curl -fsS "http://$PROM_ADDR/api/v1/targets?state=active" | python3 -c '
import json, re, sys
ts = [t["labels"] for t in json.load(sys.stdin)["data"]["activeTargets"] if t["labels"].get("job") == "shippy"]
print(len(ts) == 6 and all(re.fullmatch(re.escape(t["service"]) + r"@[0-9.]+:9464", t["instance"]) for t in ts))')" = True

# One traced call through the cli service (its SHIPPY_TELEMETRY__OTLP_ENDPOINT is jaeger:4317, as
# the services'): the trace in Jaeger holds the spans of every process the call went through: the
# cli, consignment and vessel (consignment verifies the token itself with the user service's
# public keys, fetched by an earlier call, so the user service is not on this call's path). The
# services started before Jaeger did: their exporters must have connected since.
trace_id="$(compose run --rm --no-deps cli --trace consignment create /consignment.json 2>&1 >/dev/null |
  sed -n 's/^trace id: \([0-9a-f]\{32\}\)$/\1/p' | head -n1)" || true
check "cli --trace consignment create prints a trace id (${trace_id:-none})" test -n "$trace_id"
trace_services() {
  curl -fsS "http://$JAEGER_ADDR/api/traces/$trace_id" | python3 -c '
import json, sys
names = {p["serviceName"] for t in json.load(sys.stdin)["data"] for p in t["processes"].values()}
print(" ".join(sorted(names)))'
}
# The user service appears too when this call is the one that refreshes consignment's copy of the
# keys (at least once a minute): it is allowed, not required.
trace_complete() { [[ " $(trace_services) " =~ ^\ consignment\ shippy\ (user\ )?vessel\ $ ]]; }
if [[ -n "$trace_id" ]]; then wait_until 30 "the whole trace in Jaeger" trace_complete || true; fi
check "Jaeger holds trace ${trace_id:-none} with spans of shippy (cli), consignment, vessel ($(trace_services 2>/dev/null || echo none))" trace_complete
for svc in prometheus jaeger; do
  id="$(project_ids --filter "label=com.docker.compose.service=$svc" | head -n1)"
  measured "idle $svc: $(podman stats --no-stream --format '{{.MemUsage}}' "$id")"
done

say "stopping one vessel container while consignments keep coming"
victim="${VESSELS[0]}"
marker="$WORK/stop-done" results="$WORK/stop-calls"
rm -f "$marker" "$results"
# Calls back to back until 10 more have run after the stop finished (at most 400 calls).
(
  after=0
  for ((i = 0; i < 400 && after < 10; i++)); do
    if book; then echo ok; else echo fail; fi
    [[ -e "$marker" ]] && after=$((after + 1))
  done >"$results"
) &
loop_pid=$!
wait_until 30 "the first calls of the loop" test -s "$results" || true
t0=$SECONDS
# (podman complains on stderr that it has no systemd timer to remove; the state is checked below)
podman stop -t 15 "$victim" >/dev/null 2>&1 || true
stop_secs=$((SECONDS - t0))
touch "$marker"
wait "$loop_pid"
total=$(grep -c . "$results" || true)
fails=$(grep -c fail "$results" || true)
check "calls during and after stopping $(name_of "$victim") (${stop_secs} s to stop): $total calls, 0 failed ($fails)" test "$fails" = 0
check "$(name_of "$victim") exited 0 after SIGTERM (deregister, drain)" test "$(podman inspect --format '{{.State.ExitCode}}' "$victim")" = 0
vessels_two() {
  (($(podman exec "$etcd_id" etcdctl get --prefix --keys-only /shippy/services/vessel/ | grep -c .) == 2))
}
check "the stopped vessel is gone from etcd" wait_until 10 "2 vessels in etcd" vessels_two

echo
echo "Measured:"
printf '  %s\n' "${MEASURED[@]}"
echo "  whole run: $((SECONDS - started)) s"
echo "containers: $passed passed, $failed failed"
((failed == 0))
