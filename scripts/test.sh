#!/usr/bin/env bash
# The one command that installs everything the tests need and runs them all:
#   bash scripts/test.sh            (extra pytest arguments are passed on)
# Works on a fresh machine with Python 3.11 and pip (Debian tools come from apt when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
step() { printf '\n== %s\n' "$*"; }

step "system tools"
need=()
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing tools: ${need[*]} (install them with your package manager)" >&2
        exit 1
    fi
fi

step "python packages"
$PY -m pip install -q --disable-pip-version-check -e '.[test]'

step "official eas-prediction SDK in its own venv (it pins protobuf<=3.20.3)"
if ! .venv-eas/bin/python -c 'import eas_prediction' 2>/dev/null; then
    $PY -m venv .venv-eas
    .venv-eas/bin/python -m pip install -q --disable-pip-version-check eas-prediction
fi

step "lint and types"
$PY -m ruff check src tests
$PY -m mypy

step "tests"
$PY -m pytest -q -p no:cacheprovider "$@"
