"""Accounting through a RADIUS outage and a daemon crash, and the Acct-Terminate-Cause of each end.

The scenario (tests/server/scenario_radius_outage.py) runs in a namespace of its own with a real
FreeRADIUS, real TLS dialers and TUNs; these tests read what it recorded and FreeRADIUS's detail
file. Records are told apart by NAS-Identifier (one per daemon of the scenario).
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from typing import Any

import pytest

from tests.support.peers import require_program
from tests.support.scenario import run_scenario

Record = dict[str, list[str]]


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    require_program("freeradius")
    return run_scenario("tests.server.scenario_radius_outage", timeout=150, what="network namespace, TUN")


def status(record: Record) -> str:
    return record["Acct-Status-Type"][0]


def of_user(detail: list[Record], user: str) -> list[Record]:
    return [record for record in detail if record.get("User-Name") == [user]]


def event_time(record: Record) -> int:
    """Event-Timestamp, which the detail file writes as a UTC date."""
    parsed = datetime.datetime.strptime(record["Event-Timestamp"][0], "%b %d %Y %H:%M:%S %Z")
    return int(parsed.replace(tzinfo=datetime.UTC).timestamp())


def single_stop(detail: list[Record], user: str) -> Record:
    records = of_user(detail, user)
    assert [status(r) for r in records] == ["Start", "Stop"], records
    return records[1]


# --- the outage --------------------------------------------------------------------------------


def test_sessions_stay_up_while_radius_is_down(run: dict[str, Any]) -> None:
    outage = run["outage"]
    assert outage["outage_seconds"] >= 5
    assert outage["pings_during_outage"] == [3, 3]
    assert outage["pings_after"] == [3, 3]
    assert outage["sessions_before_stop"] == ["steady1", "steady2"]  # an unanswered Interim ends nothing
    during = outage["accounting_during_outage"]
    assert during["servers_down"] is True
    assert during["failed_attempts"] >= 1
    # Waiting in the spool at the restart: the leaver's Stop and one Interim of each steady session.
    assert outage["pending_at_restart"] == 3
    assert outage["drained_after"] < 20


def test_every_record_arrives_once_after_the_outage(run: dict[str, Any]) -> None:
    outage = run["outage"]
    detail: list[Record] = outage["detail"]
    expected = Counter((session, kind) for session, kind in outage["recorded"])
    delivered = Counter((r["Acct-Session-Id"][0], status(r)) for r in detail
                        if status(r) in ("Start", "Interim-Update", "Stop"))
    assert delivered == expected  # none missing, none twice
    assert [status(r) for r in detail].count("Accounting-On") == 1
    assert [status(r) for r in detail].count("Accounting-Off") == 1
    assert status(detail[0]) == "Accounting-On" and status(detail[-1]) == "Accounting-Off"
    for user, session_id in outage["session_ids"].items():
        kinds = [status(r) for r in detail if r["Acct-Session-Id"] == [session_id]]
        assert kinds[0] == "Start" and kinds[-1] == "Stop" and kinds.count("Stop") == 1, (user, kinds)
        if user.startswith("steady"):
            assert kinds.count("Interim-Update") >= 1, (user, kinds)
    assert outage["final_statistics"]["accounting"]["spool"]["records"] == 0


def test_records_made_during_the_outage_are_delivered_after_it(run: dict[str, Any]) -> None:
    outage = run["outage"]
    detail: list[Record] = outage["detail"]
    stopped, restarting = math.floor(outage["stopped_wall"]), math.ceil(outage["restarting_wall"])
    late = [of_user(detail, "leaver")[-1]]
    late += [next(r for r in of_user(detail, user) if status(r) == "Interim-Update")
             for user in ("steady1", "steady2")]
    assert [status(r) for r in late] == ["Stop", "Interim-Update", "Interim-Update"]
    for record in late:
        assert stopped <= event_time(record) <= restarting, record  # made while FreeRADIUS was down
        assert int(record["Timestamp"][0]) >= math.floor(outage["restarting_wall"])  # received after
        delay = int(record["Acct-Delay-Time"][0])
        assert delay >= 1, record
        assert abs(delay - (int(record["Timestamp"][0]) - event_time(record))) <= 1, record  # whole seconds
    for record in late[1:]:
        assert record["Acct-Session-Time"] == ["10"]  # Acct-Interim-Interval 10 from the Access-Accept


# --- how sessions end ----------------------------------------------------------------------------


def test_session_timeout_ends_the_session(run: dict[str, Any]) -> None:
    stop = single_stop(run["outage"]["detail"], "timed")
    assert stop["Acct-Terminate-Cause"] == ["Session-Timeout"]
    assert 3 <= int(stop["Acct-Session-Time"][0]) <= 4
    assert run["outage"]["ends"]["client_reasons"]["timed"] == "peer sent Terminate-Request"


def test_idle_timeout_ends_a_silent_session(run: dict[str, Any]) -> None:
    stop = single_stop(run["outage"]["detail"], "idler")
    assert stop["Acct-Terminate-Cause"] == ["Idle-Timeout"]
    assert 3 <= int(stop["Acct-Session-Time"][0]) <= 4


def test_reset_through_the_control_socket_is_admin_reset(run: dict[str, Any]) -> None:
    assert run["outage"]["ends"]["reset_cli"] == "rc=0 ended 1 session(s)"
    stop = single_stop(run["outage"]["detail"], "resetme")
    assert stop["Acct-Terminate-Cause"] == ["Admin-Reset"]


def test_client_hang_up_is_user_request(run: dict[str, Any]) -> None:
    detail = run["outage"]["detail"]
    assert single_stop(detail, "quitter")["Acct-Terminate-Cause"] == ["User-Request"]
    assert of_user(detail, "leaver")[-1]["Acct-Terminate-Cause"] == ["User-Request"]


def test_idle_timeout_is_not_reset_by_lcp_keepalives(run: dict[str, Any]) -> None:
    echo = run["echo"]
    assert echo["ended_after"] is not None and echo["ended_after"] <= 5, echo
    assert single_stop(echo["detail"], "echoer")["Acct-Terminate-Cause"] == ["Idle-Timeout"]


# --- the crash -----------------------------------------------------------------------------------


def test_killed_daemon_leaves_no_interface(run: dict[str, Any]) -> None:
    crash = run["crash"]
    assert crash["kill_code"] == -9
    assert crash["ping_before"] == 2
    assert crash["ifname"] in crash["links_before_kill"]
    assert crash["ifname"] not in crash["links_after_kill"]
    assert run["links_at_end"] == ["lo"]


def test_restart_stops_the_crashed_session_with_nas_reboot(run: dict[str, Any]) -> None:
    crash = run["crash"]
    detail: list[Record] = crash["detail"]
    kinds = [status(r) for r in detail]
    assert kinds == ["Accounting-On", "Start", "Stop", "Accounting-On", "Accounting-Off"]
    start, stop = detail[1], detail[2]
    assert start["Acct-Session-Id"] == stop["Acct-Session-Id"] == [crash["session_id"]]
    assert stop["Acct-Terminate-Cause"] == ["NAS-Reboot"]
    for name in ("User-Name", "Class", "Framed-IP-Address", "NAS-Port-Id", "Calling-Station-Id"):
        assert stop[name] == start[name], name
    assert stop["Class"] == ["0x" + b"cls-crashed".hex()]
    assert "1 sessions were open at the last shutdown" in crash["restart_log"]
    assert crash["term_code"] == 0
    assert crash["final_statistics"]["accounting"]["spool"]["records"] == 0
