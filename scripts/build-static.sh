#!/usr/bin/env bash
# Builds the service binaries the way the images do (release, static, musl) into
# target/<arch>-unknown-linux-musl/release, for `make bench` to measure what ships. Installs what
# that needs when missing: Debian's musl-tools (musl-gcc, for the C code in dependencies) and the
# Rust musl target. Prints the directory of the binaries on stdout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
arch="$(uname -m)"
triple="${arch}-unknown-linux-musl"
command -v "${arch}-linux-musl-gcc" >/dev/null || apt_install musl-tools
rustup target list --installed | grep -qx "$triple" || rustup target add "$triple" >&2
PROTOC="${PROTOC:-$(scripts/ensure-protoc.sh)}" cargo build --locked --release --target "$triple" \
    -p shippy-user -p shippy-vessel -p shippy-consignment -p shippy-gateway >&2
echo "$PWD/target/$triple/release"
