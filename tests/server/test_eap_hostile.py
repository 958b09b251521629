"""Hostile EAP peers on the real daemon (real TLS and TUN, in a namespace of its own): each ends
within the negotiation timeout, a good EAP client is served meanwhile, memory stays bounded.
About 15 s."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.scenario_eap_hostile import NEGOTIATION_TIMEOUT
from tests.support.scenario import run_scenario

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    return run_scenario("tests.server.scenario_eap_hostile", timeout=120)


@pytest.mark.parametrize("kind", ["identity-flood", "lying-length", "endless-fragments", "stalled-tls"])
def test_each_hostile_peer_is_ended_within_the_negotiation_timeout(outcome: dict[str, Any],
                                                                   kind: str) -> None:
    case = outcome["hostile"][kind]
    # Generous slack over the timeout on a busy machine; what matters is that it ends by itself.
    assert case["ended"] and case["after"] < NEGOTIATION_TIMEOUT + 5, (case, outcome["logs"])


def test_a_good_client_is_served_meanwhile(outcome: dict[str, Any]) -> None:
    assert outcome["good_pings"] == 3 and outcome["good_still_up"]
    assert outcome["connections_left"] == 0


def test_memory_stays_bounded(outcome: dict[str, Any]) -> None:
    print(f"daemon resident memory grew by {outcome['rss_growth_kib']} KiB")
    for kind, case in outcome["hostile"].items():
        print(f"{kind}: ended after {case['after']} s ({case['reason']})")
    print("\n".join(outcome["logs"]))
    assert outcome["rss_growth_kib"] < 64 * 1024
