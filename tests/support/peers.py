"""Finding the real third-party programs the tests talk to.

Under CI=true a missing peer is a failure, not a skip: CI must prove interoperability, and a
silently skipped interop test proves nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """What a test does when something it needs is missing: under CI=true, where every test must
    run, it fails; elsewhere (a developer's machine) it skips. The one place that decides."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_program(name: str) -> str:
    """Path of ``name``; fails under CI=true when it is missing, skips otherwise."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (tests/run.sh installs it)")
    return path


def require_root(what: str) -> None:
    """Tests that build namespaces, TUN devices or tc need root; fail under CI=true without it."""
    if os.geteuid() != 0:
        unavailable(f"needs root ({what})")


def require_kernel(what: str, *programs: str) -> None:
    """Root, /dev/net/tun and the given programs (ip by default), for tests that build namespaces
    and TUN devices; fails under CI=true when one is missing, skips otherwise."""
    require_root(what)
    for program in programs or ("ip",):
        require_program(program)
    if not os.path.exists("/dev/net/tun"):
        unavailable(f"{what}: /dev/net/tun is missing")
