"""`ppp-options mppe require` on the real daemon (real TLS and TUN, in a namespace of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root (network namespace, TUN)")
        pytest.skip("needs root (network namespace, TUN)")
    namespace = f"vpndt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.server.scenario_mppe"],
            cwd=REPO, capture_output=True, text=True, timeout=90, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_client_that_negotiates_mppe_passes_traffic_encrypted(run: dict[str, object]) -> None:
    assert run["server_mppe_on"] is True
    assert run["mppe_pings"] == 3


def test_a_client_without_ccp_is_refused_when_mppe_is_required(run: dict[str, object]) -> None:
    assert run["plain_up"] is False
    assert run["plain_reason"]
    statistics = run["statistics"]
    assert isinstance(statistics, dict)
    assert statistics["counters"]["sessions_established"] == 1
    assert statistics["pools"]["P"]["used"] == 0
