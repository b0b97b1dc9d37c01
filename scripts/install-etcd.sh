#!/usr/bin/env bash
# Make sure etcd (Debian's etcd-server/etcd-client, 3.4.x) is installed for
# the registry/config-centre tests, which start their own etcd on free ports
# with temporary data directories.
#
# Usage: scripts/install-etcd.sh [--force] [--stop-system-etcd]
#   --force             run apt-get even if etcd and etcdctl are already on PATH
#   --stop-system-etcd  also stop and disable a system etcd service that was
#                       already installed and running before this script
#
# Does nothing (except print where etcd is) when etcd and etcdctl are on PATH.
# Otherwise runs 'apt-get update' once and installs the two packages (as root,
# or through sudo). If that install starts the packaged etcd service (it
# listens on 127.0.0.1:2379), the service is stopped and disabled again: the
# tests never use it. On arm64, etcd 3.4 refuses to start unless
# ETCD_UNSUPPORTED_ARCH=arm64 is set in its environment.
#
# Messages go to stderr; stdout gets two lines: "etcd <path>" and
# "etcd-version <x.y.z>".
set -euo pipefail

force=0
stop_system=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --stop-system-etcd) stop_system=1 ;;
        -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-etcd.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "install-etcd.sh: $*" >&2; }
fail() {
    say "ERROR: $*"
    exit 1
}

# as_root: run a command as root, directly or via sudo.
# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

can_be_root() {
    [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1
}

# Is a system (packaged) etcd daemon running? The Debian service runs as the
# 'etcd' user.
system_etcd_pids() {
    if command -v pgrep >/dev/null 2>&1; then
        pgrep -u etcd -x etcd 2>/dev/null || true
    else
        ps -eo pid=,user=,comm= 2>/dev/null | awk '$2 == "etcd" && $3 == "etcd" { print $1 }'
    fi
}

stop_system_etcd() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        say "stopping and disabling the system etcd service (systemd)"
        as_root systemctl disable --now etcd.service >&2 || say "WARNING: 'systemctl disable --now etcd' failed"
    else
        say "stopping and disabling the system etcd service (SysV init script)"
        if command -v invoke-rc.d >/dev/null 2>&1; then
            as_root invoke-rc.d etcd stop >&2 || true
        elif [ -x /etc/init.d/etcd ]; then
            as_root /etc/init.d/etcd stop >&2 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            as_root update-rc.d etcd disable >/dev/null 2>&1 || true
        fi
    fi
    # Last resort: the packaged daemon runs as user etcd; our tests never do.
    local pids
    pids="$(system_etcd_pids)"
    if [ -n "$pids" ]; then
        say "system etcd still running (pid $pids): sending SIGTERM"
        # shellcheck disable=SC2086
        as_root kill $pids 2>/dev/null || true
        sleep 1
    fi
}

have_etcd() {
    command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1
}

installed_now=0
if [ "$force" = 1 ] || ! have_etcd; then
    command -v apt-get >/dev/null 2>&1 ||
        fail "etcd is not installed and apt-get is not available. Install etcd 3.4+ (etcd and etcdctl on PATH) by other means."
    can_be_root ||
        fail "etcd is not installed and this needs root: run 'apt-get update && apt-get install -y etcd-server etcd-client' as root (sudo is not available)."

    apt_opts=(-o DPkg::Lock::Timeout=300 -q)
    say "installing etcd-server and etcd-client with apt-get"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update >&2; then
        fail "'apt-get update' failed (is the Debian package mirror reachable? is sudo allowed without a password?)"
    fi
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
        etcd-server etcd-client >&2; then
        fail "'apt-get install etcd-server etcd-client' failed (see above). These packages are in Debian bookworm (etcd 3.4)."
    fi
    installed_now=1
    hash -r
    have_etcd || fail "etcd-server/etcd-client installed, but etcd or etcdctl is still not on PATH ($PATH)"
fi

# The package's service would hold 127.0.0.1:2379. In containers it usually
# is not started at all (no init system, or policy-rc.d forbids it).
if [ -n "$(system_etcd_pids)" ]; then
    if [ "$installed_now" = 1 ] || [ "$stop_system" = 1 ]; then
        stop_system_etcd
        if [ -n "$(system_etcd_pids)" ]; then
            say "WARNING: a system etcd (user 'etcd') is still running: $(system_etcd_pids | tr '\n' ' ')"
        fi
    else
        say "NOTE: a system etcd service is running (it listens on 2379 by default). The tests use their own ports,"
        say "      so it does no harm; run with --stop-system-etcd to stop and disable it."
    fi
fi

etcd_path="$(command -v etcd)"
etcd_version="$(etcd --version 2>/dev/null | awk -F': *' 'tolower($1) == "etcd version" { print $2; exit }')"
[ -n "$etcd_version" ] || fail "'$etcd_path --version' did not report a version"
etcdctl_version="$(ETCDCTL_API=3 etcdctl version 2>/dev/null | awk -F': *' 'tolower($1) == "etcdctl version" { print $2; exit }')"
say "etcd $etcd_version at $etcd_path; etcdctl ${etcdctl_version:-unknown} at $(command -v etcdctl)"
case "$(uname -m)" in
    aarch64|arm64) say "NOTE: on arm64, start etcd 3.4 with ETCD_UNSUPPORTED_ARCH=arm64 in its environment" ;;
esac
echo "etcd $etcd_path"
echo "etcd-version $etcd_version"
