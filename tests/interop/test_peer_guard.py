"""The one rule for a missing peer: a failure under CI=true, a skip on a developer's machine."""

from __future__ import annotations

import pytest

from tests.support.peers import require_program, unavailable


def test_a_missing_peer_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-peer-program is not installed"):
        require_program("no-such-peer-program")


def test_a_missing_peer_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="gone"):
        unavailable("gone")


def test_a_present_program_is_found() -> None:
    assert require_program("ip").endswith("/ip")
