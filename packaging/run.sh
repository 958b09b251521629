#!/usr/bin/env bash
# The main job: installs what vpnd needs (Debian 12, root) and runs the daemon; on first start
# it writes the embedded default (self-signed certificate, a demo user, a private pool) to /etc/vpnd.
# Extra arguments go to the vpnd command.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/packaging/bootstrap.sh" runtime
exec "$repo/.venv/bin/vpnd" run "$@"
