"""Replies without Message-Authenticator from a real FreeRADIUS 3.2.1 (Debian 12 as installed),
through the daemon: the operator is told which server and what to change; the client is not told
that the servers did not answer; `accept-unsigned-replies` lets the same logins in.

The scenario (tests/server/scenario_radius_unsigned.py) runs in a namespace of its own; about 15 s.
"""

from __future__ import annotations

import pytest

from tests.support.peers import require_program
from tests.support.scenario import run_scenario
from vpnd.aaa.radius import NO_ANSWER_MESSAGE, UNSIGNED_MESSAGE

METHODS = ("pap", "mschap-v2")


@pytest.fixture(scope="module")
def run() -> dict[str, object]:
    require_program("freeradius")
    return run_scenario("tests.server.scenario_radius_unsigned", timeout=120, what="network namespace, TUN")


def test_unsigned_replies_refuse_the_login_and_the_log_names_the_server_and_the_fix(
        run: dict[str, object]) -> None:
    refused = run["refused"]
    assert isinstance(refused, dict)
    log = "\n".join(refused["log"])
    for method in METHODS:
        attempt = refused[method]
        assert attempt["up"] is False
        # The client hears that the service is misconfigured, not that nobody answered.
        assert UNSIGNED_MESSAGE in attempt["told"] and NO_ANSWER_MESSAGE not in attempt["told"]
        # One try, not max-try retransmissions of a reply that will never be signed.
        assert attempt["seconds"] < 2 * 3
    # The session's failure cause, in the connection's log lines: the server and both fixes.
    causes = [line for line in refused["log"] if "authentication failed: " in line]
    assert len(causes) >= len(METHODS), log
    for cause in causes:
        assert "RADIUS server 127.0.0.1 answered without Message-Authenticator" in cause
        assert "Message-Authenticator := 0x00" in cause
        assert "set 'vpn sstp authentication radius server 127.0.0.1 accept-unsigned-replies'" in cause
    assert any("dropped a reply from 127.0.0.1" in line and "accept-unsigned-replies" in line
               for line in refused["log"]), log
    assert "did not answer" not in log
    servers = refused["statistics"]["radius_servers"]
    assert servers[0]["dropped-bad-authenticator"] >= len(METHODS)


def test_accept_unsigned_replies_lets_the_same_logins_in(run: dict[str, object]) -> None:
    accepted = run["accepted"]
    assert isinstance(accepted, dict)
    for method in METHODS:
        assert accepted[method]["up"] is True, accepted["log"]
        assert accepted[method]["pings"] == 2
