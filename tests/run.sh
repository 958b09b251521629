#!/usr/bin/env bash
# The whole test suite: installs what it needs (Debian 12, root), then lint, types, tests.
# Extra arguments go to pytest (e.g. tests/run.sh -k binding).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
packaging/bootstrap.sh test
py=.venv/bin
echo "== ruff"
"$py/ruff" check vpnd tests bench
echo "== mypy"
"$py/mypy"
echo "== pytest"
"$py/pytest" "$@"
