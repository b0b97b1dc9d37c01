#!/usr/bin/env bash
# The whole shippy story on one machine with no servers: starts the user, vessel and consignment
# services and the REST gateway as separate processes on the embedded defaults (local file
# registry, the SQLite store, free gRPC ports; the gateway on http://127.0.0.1:${GATEWAY_PORT:-8080}),
# drives them with the real `shippy` CLI and one `curl`, and stops everything it started (from a
# terminal it first waits for Ctrl-C, so the web console can be tried).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${SHIPPY_BIN_DIR:-$root/target/debug}"
work="$root/.demo"
rm -rf "$work"; mkdir -p "$work"

# Everything below talks to this demo's own registry and token, whatever the user's shell has set.
while IFS= read -r var; do unset "$var"; done < <(env | grep -o '^SHIPPY_[A-Z0-9_]*' || true)
export SHIPPY_REGISTRY__LOCAL__DIR="$work/registry"
export SHIPPY_TOKEN_FILE="$work/token"
# The default store (SQLite) in the demo's own file, so every run tells the same story from scratch.
export SHIPPY_STORE__SQLITE__PATH="$work/data/shippy.db"
export SHIPPY_AUTH__DEV_MODE=true   # the demo signs tokens with the public development secret
gateway_port="${GATEWAY_PORT:-8080}"
export SHIPPY_GATEWAY__HTTP__PORT="$gateway_port"
export SHIPPY_GATEWAY__INSTANCE_ADDRESSES=true   # the console shows where each instance runs
gateway="http://127.0.0.1:$gateway_port"

bold=$'\e[1m'; reset=$'\e[0m'
[[ -t 1 ]] || { bold=""; reset=""; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
shippy() { (cd "$root" && "$bin/shippy" "$@"); }

pids=()
stop_all() {
  local status=0
  if ((${#pids[@]})); then
    step "Stopping the services (SIGTERM: deregister, drain, exit)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    ((status == 0)) && echo "All services exited cleanly. Logs: $work/*.log"
  fi
  return "$status"
}
trap 'stop_all' EXIT

for service in user vessel consignment gateway; do
  [[ -x "$bin/shippy-$service" ]] || { echo "error: $bin/shippy-$service is missing; run 'make demo' (it builds first)" >&2; exit 1; }
  "$bin/shippy-$service" >"$work/$service.log" 2>&1 &
  pids+=("$!")
done

step "Starting user, vessel, consignment and gateway services (registry: $SHIPPY_REGISTRY__LOCAL__DIR)"
shippy status --wait 30

step "shippy user create --name 'Ewan Valentine' --email ewan@example.com --company BBC --password ********"
shippy user create --name "Ewan Valentine" --email ewan@example.com --company BBC --password "correct horse battery"

step "shippy login --email ewan@example.com --password ********"
shippy login --email ewan@example.com --password "correct horse battery"

step "shippy consignment create consignment.json"
shippy consignment create consignment.json

step "shippy consignment list"
shippy consignment list

step "shippy vessel list"
shippy vessel list

step "The same over REST, through the gateway: curl with the token of 'shippy login'"
token="$(tr -d '[:space:]' <"$SHIPPY_TOKEN_FILE")"
echo "curl -X POST $gateway/v1/consignments -H \"Authorization: Bearer \$(cat $SHIPPY_TOKEN_FILE)\" -H 'Content-Type: application/json' -d @consignment.json"
if command -v curl >/dev/null; then
  (cd "$root" && curl -sS --fail-with-body -X POST "$gateway/v1/consignments" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d @consignment.json)
  echo
else
  echo "(curl is not installed: copy the line above once it is)"
fi

step "Web console: $gateway/   API: $gateway/openapi.json"
if [[ -t 0 && -t 1 ]]; then
  echo "The system keeps running; press Ctrl-C to stop it."
  trap 'trap - EXIT; stop_all; exit 0' INT
  wait "${pids[0]}" || true
fi

trap - EXIT
stop_all
