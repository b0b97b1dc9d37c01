#!/usr/bin/env bash
# Make sure the OpenAPI validator (Python's openapi-spec-validator, pinned in
# scripts/lib/openapi-validator-requirements.txt) is installed for the gateway's test, which
# validates the document the gateway serves at /openapi.json.
#
# Usage: scripts/install-openapi-validator.sh [--force]
#   --force  reinstall even when the pinned version is there
#
# Installs into .tools/openapi-venv (a Python venv inside the repository, ignored by git). Messages
# go to stderr; stdout gets one line: "openapi-spec-validator <path of the venv's python>".
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
requirements="$root/scripts/lib/openapi-validator-requirements.txt"
venv="$root/.tools/openapi-venv"
stamp="$venv/.requirements"

force=0
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-openapi-validator.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "install-openapi-validator.sh: $*" >&2; }

if ((force == 0)) && [[ -x "$venv/bin/python" ]] && cmp -s "$requirements" "$stamp"; then
    echo "openapi-spec-validator $venv/bin/python"
    exit 0
fi
command -v python3 >/dev/null || { say "ERROR: python3 is not installed (apt-get install python3 python3-venv)"; exit 1; }
say "installing openapi-spec-validator into $venv ..."
rm -rf "$venv"
python3 -m venv "$venv" || { say "ERROR: cannot create a venv: apt-get install python3-venv"; exit 1; }
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-input -r "$requirements"
cp "$requirements" "$stamp"
echo "openapi-spec-validator $venv/bin/python"
