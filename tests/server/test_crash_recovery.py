"""SIGKILL of a daemon with shaped dual-stack sessions, during an accounting outage (about 60 s).

tests/server/scenario_crash_recovery.py runs two daemons side by side (A under test, B a
bystander, both naming interfaces sstpN) with 30 and 3 sessions, a FreeRADIUS for authentication
and one for accounting that is stopped while A's sessions churn, A is killed and restarted, and
A's new sessions churn again. bench/crash.py and bench/outage.py run the same with more sessions
and a longer outage and print the figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.scenario_crash_recovery import check_accounting
from tests.support.peers import require_program
from tests.support.scenario import run_scenario

Record = dict[str, list[str]]
SESSIONS, OTHERS, ROUNDS = 30, 3, 4


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    require_program("freeradius")
    return run_scenario("tests.server.scenario_crash_recovery", "--sessions", str(SESSIONS),
                        "--others", str(OTHERS), "--rounds", str(ROUNDS), "--kill",
                        timeout=400, what="network namespace, TUN, tc")


def status(record: Record) -> str:
    return record["Acct-Status-Type"][0]


def test_sessions_were_shaped_and_dual_stack(run: dict[str, Any]) -> None:
    shaped = run["with_sessions"]
    assert shaped["a_ifbs_shaped"] == shaped["a_tuns_shaped"] == SESSIONS
    assert shaped["a_routes"] >= 3 * SESSIONS  # peer /32, the routed /64, fe80::/64 at least


def test_what_the_killed_daemon_left_is_removed_before_it_is_ready(run: dict[str, Any]) -> None:
    assert run["kill_code"] == -9
    left = run["left_by_the_dead"]
    # TUNs, their addresses, routes and tc go with the dead process's descriptors; its IFBs stay.
    assert len(left) == run["held_at_kill"] == SESSIONS
    assert all(device["kind"] == "ifb" and device["alias"].startswith("vpnd:") for device in left.values())
    assert run["left_after_restart"] == {}
    assert run["cleanup"]["devices"] == SESSIONS


def test_the_instance_beside_it_is_untouched(run: dict[str, Any]) -> None:
    assert run["b_devices_intact"] is True
    assert run["b_pings_after_restart"] == [1] * OTHERS
    for sid in run["sessions_b"]:
        kinds = [(status(r), r.get("Acct-Terminate-Cause", [""])[0]) for r in run["detail_b"]
                 if r["Acct-Session-Id"] == [sid]]
        assert kinds == [("Start", ""), ("Stop", "User-Request")], kinds


def test_new_sessions_get_the_freed_names_and_addresses(run: dict[str, Any]) -> None:
    fresh = run["fresh"]
    assert fresh["same_ifnames"] is True
    assert fresh["lowest_addresses"] is True
    assert fresh["addresses_of_the_dead"] >= SESSIONS - ROUNDS
    assert fresh["ipv6_prefixes_of_the_dead"] >= SESSIONS - ROUNDS


def test_every_session_has_one_start_then_one_stop_with_its_cause(run: dict[str, Any]) -> None:
    checked = check_accounting(run)
    assert checked["broken"] == {"missing": [], "unknown": [], "twice": [], "order": [], "cause": []}
    assert checked["sessions"] == SESSIONS + ROUNDS + SESSIONS
    churned = [s for s in run["sessions_a"] if s["churned"]]
    assert len(churned) == ROUNDS  # started during the outage, half of them before the kill
    assert {s["run"] for s in churned} == {1, 2}
    nas = [status(r) for r in run["detail_a"] if status(r).startswith("Accounting-")]
    assert nas == ["Accounting-On", "Accounting-On", "Accounting-Off"]  # the killed run sent no Off


def test_the_spool_delivers_the_outage_once_it_is_over(run: dict[str, Any]) -> None:
    assert run["pending_at_return"] > SESSIONS  # the NAS-Reboot Stops at least
    assert run["drain"]["records"] >= run["pending_at_return"]  # more only by resends
    assert check_accounting(run)["nas_reboot_stops"] == run["held_at_kill"] == SESSIONS


def test_nothing_is_left_when_both_stop(run: dict[str, Any]) -> None:
    assert run["term_codes"] == [0, 0]
    assert run["left_at_end"] == {}
