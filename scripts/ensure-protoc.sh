#!/usr/bin/env bash
# Prints the path of a protobuf compiler for the etcd-client crate's build script, installing one
# if needed. Our own protos are compiled by protox inside the build and need none of this.
#   1. $PROTOC if it is set and runs;  2. `protoc` on PATH;
#   3. otherwise `protox` (a pure-Rust protoc) built with cargo into .tools/ (no root needed).
# Messages go to stderr; stdout is only the path.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTOX_VERSION=0.10.0

if [[ -n "${PROTOC:-}" ]] && "$PROTOC" --version >/dev/null 2>&1; then
  echo "$PROTOC"; exit 0
fi
if command -v protoc >/dev/null 2>&1; then
  command -v protoc; exit 0
fi
protox="$root/.tools/bin/protox"
if [[ ! -x "$protox" ]]; then
  echo "No protoc found: installing protox $PROTOX_VERSION (pure-Rust protoc) into .tools/ with cargo; this takes a minute, once." >&2
  if ! cargo install protox --version "$PROTOX_VERSION" --features bin --locked --root "$root/.tools" >&2; then
    echo "error: could not install protox. Install a protobuf compiler instead (Debian: apt-get install protobuf-compiler libprotobuf-dev) or set PROTOC." >&2
    exit 1
  fi
fi
echo "$protox"
