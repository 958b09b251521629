"""`ppp-options mppe require` on the real daemon (real TLS and TUN, in a namespace of its own)."""

from __future__ import annotations

import pytest

from tests.support.scenario import run_scenario


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    return run_scenario("tests.server.scenario_mppe", timeout=90, what="network namespace, TUN")


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
