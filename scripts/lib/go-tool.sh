# shellcheck shell=bash
# Builds one Go program of the test harness from its module under crates/test-support/ (FerretDB,
# Jaeger): sourced by scripts/build-<tool>.sh, which set the variables below and call
# build_go_tool "$@". One implementation of the up-to-date check, the lock that lets several test
# processes call it at once, the hermetic `go build` and the hints when it fails.
#
#   TOOL         name used in messages, e.g. build-ferretdb.sh
#   SRC_DIR      the module directory (go.mod and go.sum pin every module)
#   DEFAULT_OUT  where the binary goes without an OUTPUT argument
#   PACKAGE      what `go build` builds, e.g. `.` or github.com/jaegertracing/jaeger/cmd/jaeger
#   GO_TAGS      build tags (may be empty)
#   MIN_GO       the Go version the module needs, for the hint
#   FIRST_BUILD  what the first build costs, for the progress line
#
# Usage of a build script: [--force] [OUTPUT]. Progress and errors go to stderr; on success the
# absolute path of the binary is the only thing printed on stdout.

build_go_tool() {
    local force=0 out="" script_path="${BASH_SOURCE[1]}"
    while [ $# -gt 0 ]; do
        case "$1" in
            --force) force=1 ;;
            -h | --help) sed -n '2,/^set -euo pipefail/p' "$script_path" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            -*) echo "$TOOL: unknown option: $1" >&2; exit 2 ;;
            *)
                if [ -n "$out" ]; then echo "$TOOL: only one OUTPUT path allowed" >&2; exit 2; fi
                out="$1" ;;
        esac
        shift
    done
    out="${out:-$DEFAULT_OUT}"
    case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

    say() { echo "$TOOL: $*" >&2; }
    fail() {
        say "ERROR: $*"
        exit 1
    }
    for f in go.mod go.sum; do
        [ -f "$SRC_DIR/$f" ] || fail "missing $SRC_DIR/$f"
    done

    # Up to date if the binary exists and nothing that goes into it is newer.
    up_to_date() {
        [ -x "$out" ] || return 1
        [ -z "$(find "$SRC_DIR" "$script_path" "${BASH_SOURCE[0]}" \( -name '*.go' -o -name go.mod -o -name go.sum -o -name '*.sh' \) \
            -newer "$out" -print -quit 2>/dev/null)" ]
    }
    if [ "$force" = 0 ] && up_to_date; then
        echo "$out"
        exit 0
    fi

    command -v go >/dev/null 2>&1 || fail "the 'go' command is not on PATH. Install Go >= $MIN_GO (Debian bookworm's golang-go is 1.19, too old) and try again."
    mkdir -p "$(dirname "$out")" || fail "cannot create $(dirname "$out")"

    # Several test processes may call this at once: build under a lock, and check again once we
    # hold it (another caller may have just built it).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$out.lock"
        flock 9
        if [ "$force" = 0 ] && up_to_date; then
            echo "$out"
            exit 0
        fi
    fi

    say "building $out with $(go version 2>/dev/null || echo 'go (unknown version)') ($FIRST_BUILD)"
    tmp="$(mktemp "$out.tmp.XXXXXX")"
    log="$(mktemp "${TMPDIR:-/tmp}/$TOOL.XXXXXX.log")"
    trap 'rm -f "$tmp" "$log"' EXIT
    local start
    start=$(date +%s)
    # -mod=readonly: go.sum is complete, so a fresh machine needs only the module proxy, and the
    #   build never rewrites go.mod/go.sum in the work tree.
    # CGO_ENABLED=0: a static binary, no C compiler needed.
    # -buildvcs=false: do not stamp VCS info (fails in some checkouts, e.g. a repository without
    #   commits, and would change the binary per commit).
    if ! (
        cd "$SRC_DIR"
        CGO_ENABLED=0 GOFLAGS=-mod=readonly go build \
            -buildvcs=false -trimpath \
            -tags "$GO_TAGS" \
            -ldflags '-s -w' \
            -o "$tmp" "$PACKAGE"
    ) >"$log" 2>&1; then
        cat "$log" >&2
        say "ERROR: 'go build' of $SRC_DIR failed (output above)."
        if grep -qiE 'dial tcp|proxy\.golang\.org|connection refused|no such host|i/o timeout|403 Forbidden|module lookup disabled' "$log"; then
            say "It looks like Go modules could not be downloaded: check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY 2>/dev/null))."
        fi
        if grep -qE 'requires go >=|go.mod requires go|toolchain' "$log"; then
            say "Your Go is too old for this module or a dependency: install Go >= $MIN_GO."
        fi
        if grep -q 'missing go.sum entry' "$log"; then
            say "go.sum is missing entries: run 'go mod tidy' in $SRC_DIR."
        fi
        exit 1
    fi
    chmod 0755 "$tmp"
    mv -f "$tmp" "$out"
    say "built $out in $(($(date +%s) - start))s"
    echo "$out"
}
