#!/usr/bin/env bash
# Install the OpenID Connect provider the OIDC tests run: panva's certified
# `oidc-provider` npm package, at the exact version pinned by
# crates/test-support/oidc/package-lock.json, into
# crates/test-support/oidc/node_modules (git-ignored). The tests start it with
# Node (crates/test-support/oidc/provider.mjs) on a free loopback port.
#
# Usage: scripts/install-oidc-provider.sh [--force]
#   --force  run 'npm ci' even if the pinned version is already installed
#
# Needs Node.js >= 20 and npm on PATH, and the npm registry (or an npm cache
# that already holds the packages). Does nothing when node_modules already
# holds what package-lock.json pins; otherwise runs
# 'npm ci --omit=dev --no-audit --no-fund' (about 40 small packages, 3.4 MB,
# a few seconds).
#
# Messages go to stderr; stdout gets two lines: "oidc-provider <dir>" and
# "oidc-provider-version <x.y.z>".
set -euo pipefail

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-oidc-provider.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "install-oidc-provider.sh: $*" >&2; }
fail() {
    say "ERROR: $*"
    exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$repo_root/crates/test-support/oidc"
[ -f "$dir/package-lock.json" ] || fail "$dir/package-lock.json is missing: the pinned dependency list is part of the repository."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    fail "Node.js and npm are needed to run the OIDC test provider and are not on PATH: install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)."
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] ||
    fail "Node.js $(node --version) is too old for oidc-provider 9: install Node.js 20 or later."

# The version package-lock.json pins, and the one installed (empty when none).
locked_version() {
    node -e 'const l = require(process.argv[1]); process.stdout.write(l.packages["node_modules/oidc-provider"].version)' \
        "$dir/package-lock.json"
}
installed_version() {
    node -e 'try { process.stdout.write(require(process.argv[1]).version) } catch { }' \
        "$dir/node_modules/oidc-provider/package.json"
}

wanted="$(locked_version)" || fail "cannot read the oidc-provider version from $dir/package-lock.json"
# npm writes node_modules/.package-lock.json last; an interrupted install
# leaves it older than package-lock.json or missing.
up_to_date() {
    [ "$(installed_version)" = "$wanted" ] &&
        [ -f "$dir/node_modules/.package-lock.json" ] &&
        ! [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]
}

if [ "$force" = 1 ] || ! up_to_date; then
    say "installing oidc-provider $wanted with npm ci into $dir/node_modules"
    if ! (cd "$dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >&2); then
        fail "'npm ci' failed (see above): is the npm registry reachable?"
    fi
    up_to_date || fail "npm ci finished but node_modules does not hold oidc-provider $wanted"
fi

say "oidc-provider $wanted in $dir/node_modules (node $(node --version))"
echo "oidc-provider $dir"
echo "oidc-provider-version $wanted"
