"""A session whose Interim-Updates go unanswered ends after `radius acct-timeout` (about 20 s).

tests/server/scenario_acct_timeout.py runs the daemon with a real FreeRADIUS, a TLS dialer and a
TUN in a namespace of its own; these tests read what it recorded and FreeRADIUS's detail file.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.peers import require_program
from tests.support.scenario import run_scenario

Record = dict[str, list[str]]


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    require_program("freeradius")
    return run_scenario("tests.server.scenario_acct_timeout", timeout=120, what="network namespace, TUN")


def status(record: Record) -> str:
    return record["Acct-Status-Type"][0]


def test_unanswered_interim_ends_the_session_after_acct_timeout(run: dict[str, Any]) -> None:
    assert run["ping_while_silent"] == 2  # the silence itself does not stop traffic
    # The Interim falls due 10 s after the start; acct-timeout 2 s later the session ends.
    assert 12 <= run["ended_after_start"] < 25, run["ended_after_start"]
    assert run["client_reason"] == "peer sent Terminate-Request"
    assert run["pending_while_silent"] == 2  # the Interim and the Stop, kept in the spool


def test_the_stop_says_nas_error_and_nothing_is_lost(run: dict[str, Any]) -> None:
    detail: list[Record] = run["detail"]
    session = [r for r in detail if r.get("Acct-Session-Id") == [run["session_id"]]]
    assert [status(r) for r in session] == ["Start", "Interim-Update", "Stop"]
    stop = session[-1]
    assert stop["Acct-Terminate-Cause"] == ["NAS-Error"]
    assert [status(r) for r in detail if status(r).startswith("Accounting-")] == ["Accounting-On",
                                                                                  "Accounting-Off"]
    assert run["statistics"]["accounting"]["spool"]["records"] == 0
