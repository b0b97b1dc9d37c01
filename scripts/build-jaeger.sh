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
src_dir="$repo_root/crates/test-support/jaeger"
script_path="$repo_root/scripts/build-jaeger.sh"

force=0
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        -h|--help) sed -n '2,17p' "$script_path" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "build-jaeger.sh: unknown option: $1" >&2; exit 2 ;;
        *)
            if [ -n "$out" ]; then echo "build-jaeger.sh: only one OUTPUT path allowed" >&2; exit 2; fi
            out="$1" ;;
    esac
    shift
done
out="${out:-$repo_root/target/tools/jaeger}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

say() { echo "build-jaeger.sh: $*" >&2; }
fail() {
    say "ERROR: $*"
    exit 1
}

for f in go.mod go.sum; do
    [ -f "$src_dir/$f" ] || fail "missing $src_dir/$f"
done

# Up to date if the binary exists and nothing that goes into it is newer.
up_to_date() {
    [ -x "$out" ] || return 1
    [ -z "$(find "$src_dir" "$script_path" \( -name '*.go' -o -name go.mod -o -name go.sum -o -name build-jaeger.sh \) \
        -newer "$out" -print -quit 2>/dev/null)" ]
}

if [ "$force" = 0 ] && up_to_date; then
    echo "$out"
    exit 0
fi

command -v go >/dev/null 2>&1 || fail "the 'go' command is not on PATH. Install Go >= 1.24 (Debian bookworm's golang-go is 1.19, too old) and try again."

mkdir -p "$(dirname "$out")" || fail "cannot create $(dirname "$out")"

# Several test processes may call this at once: build under a lock, and
# check again once we hold it (another caller may have just built it).
lock="$out.lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock 9
    if [ "$force" = 0 ] && up_to_date; then
        echo "$out"
        exit 0
    fi
fi

say "building $out with $(go version 2>/dev/null || echo 'go (unknown version)') (the first build downloads ~1.7 GB of modules and takes several minutes)"

tmp="$(mktemp "$out.tmp.XXXXXX")"
log="$(mktemp "${TMPDIR:-/tmp}/build-jaeger.XXXXXX.log")"
trap 'rm -f "$tmp" "$log"' EXIT

start=$(date +%s)
# -mod=readonly: go.sum is complete, so a fresh machine needs only the module
#   proxy, and the build never rewrites go.mod/go.sum in the work tree.
# The module has no code of its own: go.mod's `tool` line pins Jaeger, and
#   its main package is built from the module cache.
# CGO_ENABLED=0: a static binary, no C compiler needed.
# -buildvcs=false: do not stamp VCS info (nothing to stamp).
if ! (
    cd "$src_dir"
    CGO_ENABLED=0 GOFLAGS=-mod=readonly go build \
        -buildvcs=false -trimpath \
        -ldflags '-s -w' \
        -o "$tmp" github.com/jaegertracing/jaeger/cmd/jaeger
) >"$log" 2>&1; then
    cat "$log" >&2
    say "ERROR: 'go build' of $src_dir failed (output above)."
    if grep -qiE 'dial tcp|proxy\.golang\.org|connection refused|no such host|i/o timeout|403 Forbidden|module lookup disabled' "$log"; then
        say "It looks like Go modules could not be downloaded: check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY 2>/dev/null))."
    fi
    if grep -qE 'requires go >=|go.mod requires go|toolchain' "$log"; then
        say "Your Go is too old for this module or a dependency: install Go >= 1.24."
    fi
    if grep -q 'missing go.sum entry' "$log"; then
        say "go.sum is missing entries: run 'go mod tidy' in $src_dir."
    fi
    exit 1
fi

chmod 0755 "$tmp"
mv -f "$tmp" "$out"
say "built $out in $(( $(date +%s) - start ))s"
echo "$out"
