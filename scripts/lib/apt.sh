# shellcheck shell=bash
# Sourced by the install scripts: installs Debian packages as root, or through sudo.
#   apt_install PACKAGE...   apt-get update, then install the packages without recommends
# Messages go to stderr, so a script's stdout stays its answer.

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "installing needs root or sudo; as root, run: $*" >&2
        return 1
    fi
}

apt_install() {
    as_root apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >&2
}
