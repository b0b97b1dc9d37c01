#!/usr/bin/env bash
# Build the FerretDB test server (crates/test-support/ferretdb, embedded
# FerretDB 1.24 with its SQLite backend) used by the MongoDB store tests.
#
# Usage: scripts/build-ferretdb.sh [--force] [OUTPUT]
#   OUTPUT   where to put the binary (default: <repo>/target/tools/ferretdb-test-server);
#            a relative path is taken from the current directory.
#   --force  rebuild even if the binary is newer than its sources.
#
# Needs Go >= 1.22 and the Go module proxy (or a module cache that already has
# the modules: go.sum pins every one of them). The first build downloads
# ~570 MB of modules and compiles for about 1.5 minutes on 2 cores; later
# calls return at once when the binary is up to date, and a rebuild after a
# change to main.go reuses Go's build cache.
#
# Progress and errors go to stderr; on success the absolute path of the
# binary is the only thing printed on stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The SQLite driver (modernc.org/sqlite) is pure Go, so the binary is static; the tag
# ferretdb_no_postgresql leaves out the PostgreSQL backend we do not use.
TOOL=build-ferretdb.sh
SRC_DIR="$repo_root/crates/test-support/ferretdb"
DEFAULT_OUT="$repo_root/target/tools/ferretdb-test-server"
PACKAGE=.
GO_TAGS=ferretdb_no_postgresql
MIN_GO=1.22
FIRST_BUILD="the first build downloads modules and takes a minute or two"
# shellcheck source=scripts/lib/go-tool.sh
source "$repo_root/scripts/lib/go-tool.sh"
build_go_tool "$@"
