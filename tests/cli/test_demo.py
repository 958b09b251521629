"""`vpnd demo` (the main job until the daemon lands) prints a complete, correct conversation."""

from __future__ import annotations

import pytest

from vpnd.cli.main import main


def test_demo_runs_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for method in ("pap", "chap", "mschap", "mschap-v2", "eap"):
        assert f"== vpnd demo: {method}," in out
    assert out.count("SSTP CALL_CONNECTED hash=SHA256") == 5
    assert out.count("-> OK") == 5
    assert "PPP CHAP Success" in out and "PPP PAP Authenticate-Ack" in out
