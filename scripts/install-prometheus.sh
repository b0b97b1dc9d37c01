#!/usr/bin/env bash
# Make sure Prometheus (Debian's `prometheus` package, 2.42 on bookworm) is
# installed for the metrics tests, which start their own Prometheus on a free
# loopback port with a generated configuration and a temporary data directory.
#
# Usage: scripts/install-prometheus.sh [--force]
#   --force  run apt-get even if prometheus is already on PATH
#
# Does nothing (except print where it is) when `prometheus` is on PATH.
# Otherwise runs 'apt-get update' and installs the package (as root, or
# through sudo) without letting it start the packaged service: the tests never
# use it, and it would hold port 9090.
#
# Messages go to stderr; stdout gets one line: "prometheus <path>".
set -euo pipefail

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-prometheus.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "install-prometheus.sh: $*" >&2; }
fail() {
    say "ERROR: $*"
    exit 1
}

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

if [ "$force" = 0 ] && command -v prometheus >/dev/null 2>&1; then
    echo "prometheus $(command -v prometheus)"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found: install Prometheus >= 2.42 yourself and put it on PATH"

# Keep the package's service from starting while it installs (policy-rc.d
# answers "action forbidden" to invoke-rc.d), unless a policy is already set.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 0755 $policy"
    added_policy=1
fi
cleanup() {
    if [ "$added_policy" = 1 ]; then
        as_root rm -f "$policy"
    fi
}
trap cleanup EXIT

say "installing Debian's prometheus package"
apt_install prometheus || fail "apt-get install prometheus failed (it needs root or sudo)"

# A systemd host ignores policy-rc.d: stop the packaged service if it started.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    say "stopping and disabling the packaged prometheus service (the tests start their own)"
    as_root systemctl disable --now prometheus >&2 || true
fi

command -v prometheus >/dev/null 2>&1 || fail "prometheus is still not on PATH after installing"
echo "prometheus $(command -v prometheus)"
