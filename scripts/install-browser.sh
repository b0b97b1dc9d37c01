#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver (Debian's `chromium` and
# `chromium-driver` packages) are installed for the web console's browser test
# (crates/system-tests/tests/gateway_console.rs), which starts its own
# `chromedriver` on a free loopback port and a headless Chromium with a
# temporary profile.
#
# Usage: scripts/install-browser.sh [--force]
#   --force  run apt-get even if chromium and chromedriver are already on PATH
#
# Does nothing (except print where they are) when both are on PATH. Otherwise
# runs 'apt-get update' and installs both packages (as root, or through sudo).
#
# Messages go to stderr; stdout gets two lines: "chromium <path>" and
# "chromedriver <path>".
set -euo pipefail

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-browser.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "install-browser.sh: $*" >&2; }
fail() {
    say "ERROR: $*"
    exit 1
}

# shellcheck source=scripts/lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

report() {
    echo "chromium $(command -v chromium)"
    echo "chromedriver $(command -v chromedriver)"
}

if [ "$force" = 0 ] && command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    report
    exit 0
fi

command -v apt-get >/dev/null 2>&1 \
    || fail "apt-get not found: install Chromium and a matching chromedriver yourself and put both on PATH (as 'chromium' and 'chromedriver')"

say "installing Debian's chromium and chromium-driver packages"
apt_install chromium chromium-driver || fail "apt-get install chromium chromium-driver failed (it needs root or sudo)"

command -v chromium >/dev/null 2>&1 || fail "chromium is still not on PATH after installing"
command -v chromedriver >/dev/null 2>&1 || fail "chromedriver is still not on PATH after installing"
report
