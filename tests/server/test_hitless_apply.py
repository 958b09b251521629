"""A commit never drops live sessions it need not drop (issue: hitless apply).

The daemon (real TLS, real TUN devices) and four dialers run in a network namespace of their
own; the scenario (tests/server/scenario_apply.py) commits configs through the control server's
apply handler and reports which sessions stayed up and still pass ICMP through the tunnel.
"""

from __future__ import annotations

import pytest

from tests.support.peers import require_root
from tests.support.scenario import run_scenario


def _require_root() -> None:
    require_root("network namespace, TUN")


@pytest.fixture(scope="module")
def scenario() -> dict[str, object]:
    return run_scenario("tests.server.scenario_apply", timeout=90, what="network namespace, TUN")


def _step(scenario: dict[str, object], name: str) -> dict[str, object]:
    steps = scenario["steps"]
    assert isinstance(steps, list)
    return next(step for step in steps if step["step"] == name)


@pytest.mark.parametrize("name", ["add user", "add name-server", "new certificate"])
def test_commit_keeps_every_session_passing_traffic(scenario: dict[str, object], name: str) -> None:
    step = _step(scenario, name)
    answer = step["answer"]
    assert answer["ok"], answer
    assert answer["result"]["ended"] == []
    assert answer["result"]["kept"] == 3
    assert step["pings"] == {"alice": 3, "bob": 3, "carol": 3}
    assert step["ended"] == {}


@pytest.mark.parametrize(("name", "word"), [("add user", "dave"), ("add name-server", "name-server"),
                                           ("new certificate", "cert-file")])
def test_commit_says_what_changed(scenario: dict[str, object], name: str, word: str) -> None:
    assert any(word in line for line in _step(scenario, name)["answer"]["result"]["applied"])


def test_added_user_can_connect(scenario: dict[str, object]) -> None:
    assert scenario["dave_pings"] == 3


def test_new_certificate_serves_new_connections(scenario: dict[str, object]) -> None:
    assert scenario["new_connection_sees_new_certificate"] is True
    assert scenario["new_connection_pings"] == 3


def test_disabling_a_user_ends_only_that_users_session(scenario: dict[str, object]) -> None:
    step = _step(scenario, "disable carol")
    result = step["answer"]["result"]
    assert len(result["ended"]) == 1
    assert "carol" in result["ended"][0]
    assert result["kept"] == 2
    assert step["pings"]["alice"] == 3 and step["pings"]["bob"] == 3
    assert set(step["ended"]) == {"carol"}


def test_nothing_left_behind(scenario: dict[str, object]) -> None:
    stats = scenario["final_statistics"]
    assert stats["pools"]["P"]["used"] == 0
    assert stats["sessions"] == {"starting": 0, "active": 0}
    assert stats["counters"]["sessions_ended"] == stats["counters"]["sessions_established"] == 5
    assert not [name for name in scenario["links_after"] if name.startswith("sstp")]
