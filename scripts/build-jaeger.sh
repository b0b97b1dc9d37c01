#!/usr/bin/env bash
# Build Jaeger v2 (the `jaeger` binary of the Go module github.com/jaegertracing/jaeger,
# pinned in crates/test-support/jaeger/go.mod) used by the tracing tests.
#
# Usage: scripts/build-jaeger.sh [--force] [OUTPUT]
#   OUTPUT   where to put the binary (default: <repo>/target/tools/jaeger);
#            a relative path is taken from the current directory.
#   --force  rebuild even if the binary is newer than its sources.
#
# Needs Go >= 1.24 and the Go module proxy (or a module cache that already has
# the modules: go.sum pins every one of them). The first build downloads
# ~1.7 GB of modules (about 2 minutes) and compiles for several minutes on
# 2 cores; later calls return at once when the binary is up to date.
#
# Progress and errors go to stderr; on success the absolute path of the
# binary is the only thing printed on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The module has no code of its own: go.mod's `tool` line pins Jaeger, and its main package is
# built from the module cache.
TOOL=build-jaeger.sh
SRC_DIR="$repo_root/crates/test-support/jaeger"
DEFAULT_OUT="$repo_root/target/tools/jaeger"
PACKAGE=github.com/jaegertracing/jaeger/cmd/jaeger
GO_TAGS=
MIN_GO=1.24
FIRST_BUILD="the first build downloads ~1.7 GB of modules and takes several minutes"
# shellcheck source=scripts/lib/go-tool.sh
source "$repo_root/scripts/lib/go-tool.sh"
build_go_tool "$@"
