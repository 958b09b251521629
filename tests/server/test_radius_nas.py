"""The daemon as a RADIUS NAS, end to end: real FreeRADIUS, real radclient, real TLS, TUN and tc.

The scenario (tests/server/scenario_radius.py) runs in a namespace of its own; these tests read
what it recorded: the addresses and rates that took effect, what radclient got back, and the
FreeRADIUS detail file.
"""

from __future__ import annotations

import pytest

from tests.support.peers import require_program
from tests.support.scenario import run_scenario


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    require_program("freeradius")
    require_program("radclient")
    require_program("tc")
    return run_scenario("tests.server.scenario_radius", timeout=120, what="network namespace, TUN, tc")


def _received(output: object) -> list[str]:
    assert isinstance(output, str)
    return [line.strip() for line in output.splitlines() if "Received" in line or "Error-Cause" in line]


def test_access_accept_attributes_take_effect(run: dict[str, object]) -> None:
    assert run["alice_address"] == "10.79.0.77"  # Framed-IP-Address
    assert run["alice_pings"] == 3
    assert run["rate_after_accept"] == 5_000_000  # Filter-Id "5000/1000": download shaped on the TUN
    assert run["show_rate"] == "5000/1000"


def test_reject_reaches_the_client_with_its_reply_message(run: dict[str, object]) -> None:
    failure = run["mallory_failure"]
    assert isinstance(failure, str) and "rejected by test policy" in failure and "691" in failure


def test_coa_changes_the_rate_live(run: dict[str, object]) -> None:
    assert any(line.startswith("Received CoA-ACK") for line in _received(run["coa"]))
    assert run["rate_after_coa"] == 2_000_000


def test_coa_runs_the_on_change_script(run: dict[str, object]) -> None:
    """extended-scripts on-change, as pppd_compat runs ip-change on a CoA: user, interface, address."""
    assert run["on_change"] == f"alice {run['ifname']} 10.79.0.77\n"


def test_coa_for_an_unknown_session_is_nakked_503(run: dict[str, object]) -> None:
    lines = _received(run["coa_unknown"])
    assert any(line.startswith("Received CoA-NAK") for line in lines)
    assert "Error-Cause = Session-Context-Not-Found" in lines


def test_disconnect_ends_the_session_and_accounting_says_admin_reset(run: dict[str, object]) -> None:
    assert any(line.startswith("Received Disconnect-ACK") for line in _received(run["disconnect"]))
    detail = run["detail"]
    assert isinstance(detail, list)
    kinds = [record["Acct-Status-Type"][0] for record in detail]
    assert kinds[0] == "Accounting-On" and kinds[-1] == "Accounting-Off"
    alice = [record for record in detail if record.get("User-Name") == ["alice"]]
    assert [record["Acct-Status-Type"][0] for record in alice] == ["Start", "Stop"]
    start, stop = alice
    assert stop["Acct-Terminate-Cause"] == ["Admin-Reset"]
    assert start["Class"] == stop["Class"] == ["0x" + b"cls-alice".hex()]  # Class echoed
    assert stop["Framed-IP-Address"] == ["10.79.0.77"]
    counters = run["alice_counters"]
    assert isinstance(counters, dict)
    assert int(stop["Acct-Input-Octets"][0]) == counters["rx_bytes"]
    assert int(stop["Acct-Output-Octets"][0]) == counters["tx_bytes"]
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"]


def test_nothing_left_behind(run: dict[str, object]) -> None:
    statistics = run["statistics"]
    assert isinstance(statistics, dict)
    assert statistics["pools"]["P"]["used"] == 0
    assert statistics["accounting"]["spool"]["records"] == 0
    assert run["links_after"] == ["lo"]  # no sstpN, no IFB


def test_radius_mppe_policy_overrides_the_service_for_one_user(run: dict[str, object]) -> None:
    plain = run["erin_plain"]
    assert isinstance(plain, dict) and not plain["up"], plain
    assert any("MPPE" in line for line in plain["log"]), plain  # the daemon says why
    assert run["erin_pings"] == 3
    mppe = run["erin_mppe"]
    assert isinstance(mppe, dict) and mppe["bits"] == 128, mppe
    assert mppe["tx"] >= 3 and mppe["rx"] >= 3, mppe


def test_framed_routes_go_into_the_session_interface(run: dict[str, object]) -> None:
    routes = run["routes"]
    assert isinstance(routes, list)
    assert "192.168.50.0/24" in routes and "192.168.51.7" in routes


def test_radius_ipv6_attributes_shape_the_session(run: dict[str, object]) -> None:
    frank = run["frank"]
    assert isinstance(frank, dict)
    assert frank["ip6"] == "2001:db8:77:1::/64"  # Framed-IPv6-Prefix, not the pool's
    assert frank["peer_id"] == "0000000000000042"  # Framed-Interface-Id, pressed on the client
    assert "2001:db8:77:1::/64" in frank["routes"] and "2001:db8:78::/48" in frank["routes"]
    assert "2001:db8:7700::/56" in frank["leases"]  # held for DHCPv6 (routed once the client asks)
    frank_records = [r for r in run["detail"] if r.get("User-Name") == ["frank"]]  # type: ignore[union-attr]
    assert frank_records and all(r["Framed-IPv6-Prefix"] == ["2001:db8:77:1::/64"] for r in frank_records)
