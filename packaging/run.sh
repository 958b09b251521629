#!/usr/bin/env bash
# The main job: installs what vpnd needs (Debian 12, root) and runs it on the embedded default.
# Extra arguments go to the vpnd command.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/packaging/bootstrap.sh" runtime
exec "$repo/.venv/bin/vpnd" demo "$@"
