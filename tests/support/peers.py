"""Finding the real third-party programs the tests talk to.

Under CI=true a missing peer is a failure, not a skip: CI must prove interoperability, and a
silently skipped interop test proves nothing.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str) -> str:
    """Path of ``name``; fails under CI=true when it is missing, skips otherwise."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} is not installed (tests/run.sh installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_root(what: str) -> None:
    """Tests that build namespaces, TUN devices or tc need root; fail under CI=true without it."""
    if os.geteuid() == 0:
        return
    message = f"needs root ({what})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
