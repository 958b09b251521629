#!/usr/bin/env bash
# Builds the Debian package of vpnd and writes vpnd_<version>_<arch>.deb to OUTDIR.
# Usage: packaging/build-deb.sh OUTDIR
#
# The version is pyproject.toml's. The package is built with Debian's tooling (dpkg-buildpackage,
# debhelper, dh-virtualenv) from packaging/debian, in a copy of this tree (uncommitted edits
# included), so the checkout stays as it is. The build tools come with `packaging/bootstrap.sh
# test`; pip fetches the daemon's wheels from the package index (PIP_CACHE_DIR, PIP_INDEX_URL and
# the other PIP_* variables are honoured; PIP_CONSTRAINT pins exact versions).
set -euo pipefail
out=${1:?usage: packaging/build-deb.sh OUTDIR}
repo=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(python3 - "$repo/pyproject.toml" <<'PY'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    version = tomllib.load(handle)["project"]["version"]
# A PEP 440 pre-release (1.0rc1, 1.0.dev2) sorts before its release; in Debian, ~ does that.
print(re.sub(r"\.?(a|b|rc|dev)(\d*)", r"~\1\2", version))
PY
)

work=$(mktemp -d "${TMPDIR:-/tmp}/vpnd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src="$work/vpnd-$version"
mkdir "$src"
tar -C "$repo" --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./run \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache \
    --exclude=.pytest_cache --exclude=.hypothesis -cf - . | tar -C "$src" -xf -
cp -a "$repo/packaging/debian" "$src/debian"
cat >"$src/debian/changelog" <<CHANGELOG
vpnd ($version) unstable; urgency=medium

  * Version $version of pyproject.toml, built by packaging/build-deb.sh.

 -- vpnd developers <vpnd@example.org>  $(date -R)
CHANGELOG

# A virtualenv or PYTHONPATH of the caller must not leak into the package's virtualenv.
(cd "$src" && env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME dpkg-buildpackage -b -us -uc)
for deb in "$work"/vpnd_"$version"_*.deb; do
  cp "$deb" "$out/"
  echo "$out/$(basename "$deb")"
done
