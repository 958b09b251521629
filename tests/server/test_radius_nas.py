"""The daemon as a RADIUS NAS, end to end: real FreeRADIUS, real radclient, real TLS, TUN and tc.

The scenario (tests/server/scenario_radius.py) runs in a namespace of its own; these tests read
what it recorded: the addresses and rates that took effect, what radclient got back, and the
FreeRADIUS detail file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.peers import require_program

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    for program in ("freeradius", "radclient", "tc"):
        require_program(program)
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root (network namespace, TUN, tc)")
        pytest.skip("needs root (network namespace, TUN, tc)")
    namespace = f"vpndt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"], check=True)
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "tests.server.scenario_radius"],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


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


def test_coa_for_an_unknown_session_is_nakked_503(run: dict[str, object]) -> None:
    lines = _received(run["coa_unknown"])
    assert any(line.startswith("Received CoA-NAK") for line in lines)
    assert "Error-Cause = Session-Context-Not-Found" in lines


def test_disconnect_ends_the_session_and_accounting_says_admin_reset(run: dict[str, object]) -> None:
    assert any(line.startswith("Received Disconnect-ACK") for line in _received(run["disconnect"]))
    detail = run["detail"]
    assert isinstance(detail, list)
    kinds = [record["Acct-Status-Type"][0] for record in detail]
    assert kinds == ["Accounting-On", "Start", "Stop", "Accounting-Off"]
    start, stop = detail[1], detail[2]
    assert stop["Acct-Terminate-Cause"] == ["Admin-Reset"]
    assert start["Class"] == stop["Class"] == ["0x" + b"cls-alice".hex()]  # Class echoed
    assert stop["Framed-IP-Address"] == ["10.79.0.77"]
    statistics = run["statistics"]
    assert isinstance(statistics, dict)
    assert int(stop["Acct-Input-Octets"][0]) == statistics["counters"]["rx_bytes"]
    assert int(stop["Acct-Output-Octets"][0]) == statistics["counters"]["tx_bytes"]
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"]


def test_nothing_left_behind(run: dict[str, object]) -> None:
    statistics = run["statistics"]
    assert isinstance(statistics, dict)
    assert statistics["pools"]["P"]["used"] == 0
    assert statistics["accounting"]["spool"]["records"] == 0
    assert run["links_after"] == ["lo"]  # no sstpN, no IFB
