#!/usr/bin/env bash
# Installs what vpnd needs on Debian 12 (run as root) and prepares the virtualenv in .venv.
# Usage: packaging/bootstrap.sh [runtime|test]
#   runtime: Python and the libraries the daemon imports
#   test:    also the real peers the test suite talks to and the checkers (ruff, mypy, pytest)
# Debian packages are installed with --no-install-recommends and without starting system daemons.
# Idempotent: a second run with nothing missing takes about a second.
set -euo pipefail
profile=${1:-runtime}
repo=$(cd "$(dirname "$0")/.." && pwd)

runtime_pkgs="python3 python3-venv python3-pip iproute2 openssl ca-certificates"
test_pkgs="tshark sstp-client iperf3 softether-vpnserver softether-vpncmd freeradius freeradius-utils haproxy
  prometheus curl build-essential dpkg-dev xz-utils"
# The Debian package test: the package build (dpkg-buildpackage, debhelper, dh-virtualenv) and
# the fresh Debian 12 root it is installed into (debootstrap; zstd packs the cached root).
test_pkgs="$test_pkgs debhelper dh-virtualenv debootstrap zstd"

pkgs=$runtime_pkgs
[ "$profile" = test ] && pkgs="$pkgs $test_pkgs"

missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing Debian packages ($missing) and not root; run as root" >&2
    exit 1
  fi
  # Keep maintainer scripts from starting daemons (freeradius, haproxy, ...): the tests run their own.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  echo "bootstrap: installing Debian packages:" $missing >&2
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

venv="$repo/.venv"
extras="[fast]"
[ "$profile" = test ] && extras="[test,fast]"
stamp="$venv/.vpnd-deps"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) $profile"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
have=$(cat "$stamp" 2>/dev/null || true)
if [ "$have" != "$want" ] && ! { [ "$profile" = runtime ] && [ "${have#* }" = test ] && [ "${have%% *}" = "${want%% *}" ]; }; then
  echo "bootstrap: installing Python packages into .venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo$extras" >&2
  echo "$want" >"$stamp"
fi

# The lwIP PPP peer of the interop tests, built from Debian's lwip source package and cached
# outside the repository. A failed build does not stop the install: its tests then fail under
# CI=true (tests/support/peers.py) and are skipped elsewhere.
if [ "$profile" = test ] && [ "$(id -u)" = 0 ]; then
  "$repo/tests/lwip/build.sh" || echo "bootstrap: the lwIP PPP peer was not built (tests/lwip/build.sh)" >&2
fi
