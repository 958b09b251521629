"""Hostile IPv6 link traffic from an authenticated client (scenario_ipv6_hostile.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.scenario import run_scenario


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return run_scenario("tests.server.scenario_ipv6_hostile")


def test_the_daemon_and_both_sessions_survive(run: dict[str, Any]) -> None:
    assert run["eve_up"] and run["sessions"] == 2
    assert run["control_pings"] == 3


def answers(run: dict[str, Any], case: str) -> int:
    """What the daemon sent back during a case, leaving out its own periodic advertisements (the
    first ones come within seconds of IPV6CP, and may fall into any case's window)."""
    kinds = run["cases"][case]["kinds"]
    return int(sum(count for kind, count in kinds.items() if kind != "router advertisement"))


def test_malformed_and_foreign_link_packets_get_no_answer(run: dict[str, Any]) -> None:
    for name in ("rs_hop_limit_1", "rs_bad_checksum", "rs_truncated", "rs_option_length_zero",
                 "ra_from_client", "dhcp_reply_from_client", "dhcp_empty", "dhcp_lying_option",
                 "too_short_for_a_header"):
        assert answers(run, name) == 0, (name, run["cases"][name])
        # An advertisement in that window is a periodic one: at most one.
        assert run["cases"][name]["kinds"].get("router advertisement", 0) <= 1


def test_floods_are_answered_sparingly(run: dict[str, Any]) -> None:
    # 500 solicitations in one burst: one advertisement (and perhaps a periodic one), not 500.
    assert run["cases"]["rs_flood"]["kinds"].get("router advertisement", 0) <= 2
    # Neighbor solicitations for our address are answered (that is ND), one each at most.
    assert answers(run, "ns_flood") <= run["cases"]["ns_flood"]["sent"]
    assert answers(run, "dhcp_random") <= 5  # random bytes are rarely a valid message


def test_a_good_solicitation_is_still_answered(run: dict[str, Any]) -> None:
    assert run["answer_after"] == ["router advertisement"]


def test_nothing_of_it_reached_the_kernel_and_nothing_is_left(run: dict[str, Any]) -> None:
    assert run["tun_rx_during_attack"] == 0
    assert run["leases_after"] == []
    assert run["links_after"] == ["lo"]
