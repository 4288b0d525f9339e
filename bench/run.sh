#!/usr/bin/env bash
# The openeas data-plane benchmark in one command: bash bench/run.sh [--help for options]
set -euo pipefail
cd "$(dirname "$0")/.."
# The gateway keeps two sockets per SSE stream; allow what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 -m bench "$@"
