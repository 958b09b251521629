"""Limits and abuse on the real daemon (real TLS and TUN, each scenario in a namespace of its own).

scenario_limits: connection rate per address, max-concurrent-sessions, phase deadlines and the
rate-limited refusal log. scenario_policy: authentication throttling, single-session deny and
replace (with the accounting Stop a real FreeRADIUS records), host-name for SNI and Host, and
http-error. The pure bookkeeping behind them is tested in test_limits.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.peers import require_program
from tests.support.scenario import run_scenario

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def limits() -> dict[str, Any]:
    return run_scenario("tests.server.scenario_limits", timeout=120)


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    require_program("freeradius")
    return run_scenario("tests.server.scenario_policy", timeout=120)


# ---- connection rate, starting sessions, deadlines ------------------------------------------


def test_connection_limit_refuses_before_tls_and_blocks_the_address(limits: dict[str, Any]) -> None:
    rate = limits["rate"]
    assert rate["admitted_up"] == [True, True]  # burst 2
    assert not rate["third"]["up"] and "Connect" in rate["third"]["reason"]  # no TLS, not even a ServerHello
    assert all(case["closed"] and case["answer"] == "" for case in rate["blocked_again"])
    assert rate["pings"] == [3, 3]  # sessions that were admitted carry on
    refused = rate["statistics"]["refused"]
    assert refused["refused_connection_rate"] == 1 and refused["refused_source_blocked"] == 3
    assert rate["statistics"]["counters"]["connections_accepted"] == 5  # 2 dialers + 3 stalls elsewhere


def test_other_addresses_are_served_while_one_is_blocked(limits: dict[str, Any]) -> None:
    stalls = limits["rate"]["stalls"]
    assert stalls["tls"]["handshake"] == "ok"
    assert stalls["http"]["answer"].startswith("HTTP/1.1 200 OK\r\n")


def test_each_phase_has_a_deadline(limits: dict[str, Any]) -> None:
    rate = limits["rate"]
    stalls = rate["stalls"]
    assert all(stall["closed"] for stall in stalls.values())
    # After HTTP the client is told: Call Abort with status NEGOTIATION_TIMEOUT (8).
    abort = stalls["http"]["answer"].encode("latin-1").split(b"\r\n\r\n", 1)[1]
    assert abort == bytes.fromhex("10010014 00050001 0002000c 00000002 00000008")
    refused = rate["statistics"]["refused"]
    phases = ("tls", "http", "sstp_connect")
    assert [refused.get(f"negotiation_timeout_{phase}") for phase in phases] == [1, 1, 1]
    assert rate["statistics"]["sessions"] == {"starting": 0, "active": 2}  # the slots are free again


def test_refusals_are_logged_once_per_source_then_summed_up(limits: dict[str, Any]) -> None:
    lines = limits["rate"]["logs"]
    assert [line for line in lines if "from 127.0.0.1" in line] == [
        "refused a connection from 127.0.0.1: over connection-limit, 127.0.0.1 blocked for 60 s",
        "refused a connection from 127.0.0.1: 127.0.0.1 is blocked (connection-limit)",
        "2 more refused from 127.0.0.1 in the last 2 s (refused_source_blocked 2)",
    ]
    for source, phase in (("127.0.0.3", "tls"), ("127.0.0.4", "http"), ("127.0.0.5", "sstp-connect")):
        assert sum(f" {source}:" in line and f"timeout: {phase} not done within 5 s" in line
                   for line in lines) == 1


def test_show_statistics_lists_refusals_by_cause(limits: dict[str, Any]) -> None:
    lines = limits["rate"]["show_statistics"]
    heading = lines.index("refused: 7")
    assert lines[heading + 1:heading + 6] == [
        "  negotiation_timeout_http: 1", "  negotiation_timeout_sstp_connect: 1",
        "  negotiation_timeout_tls: 1", "  refused_connection_rate: 1", "  refused_source_blocked: 3"]
    assert "  connections_accepted: 5" in lines[:heading]
    assert not any("refused_" in line or "negotiation_timeout" in line for line in lines[:heading])


def test_max_concurrent_sessions_counts_sessions_still_starting(limits: dict[str, Any]) -> None:
    starting = limits["starting"]
    assert not starting["while_full"]["up"]
    assert starting["after"] == {"up": True, "pings": 3}
    assert starting["statistics"]["refused"] == {"refused_max_concurrent": 1}


# ---- authentication throttling ----------------------------------------------------------------


def test_failures_make_the_next_attempts_wait_longer(policy: dict[str, Any]) -> None:
    throttling = policy["throttling"]
    assert throttling["wrong"] == ["E=691: Authentication rejected"] * 3
    assert throttling["held_after_two_failures"] == 1  # the first failure is answered at once
    held = [line.split(": ", 1)[1] for line in policy["logs"] if "authentication held" in line]
    assert held == [f"authentication held for {seconds} s: {failures} of alice from 127.0.0.1"
                    for seconds, failures in ((1, "1 recent failed login"), (2, "2 recent failed logins"),
                                              (4, "3 recent failed logins"))]
    # Once a minute per user name in full; the rest at debug level.
    assert [line for line in policy["info_logs"] if "authentication held" in line] == [
        line for line in policy["logs"] if "authentication held for 1 s" in line]


def test_a_waiting_attempt_blocks_nothing_else(policy: dict[str, Any]) -> None:
    throttling = policy["throttling"]
    assert throttling["alice_waiting"] == [["starting", None]]  # not answered yet...
    assert throttling["carol_pings_while_alice_waits"] == 3  # ...while carol's tunnel carries traffic


def test_the_right_password_still_gets_in_and_resets_the_count(policy: dict[str, Any]) -> None:
    throttling = policy["throttling"]
    assert throttling["alice_up"] and throttling["bob_up"]
    assert throttling["throttled"] == 3  # bob, from the same address as alice's failures, did not wait
    assert policy["statistics"]["refused"]["auth_failed"] == 3


def test_no_answer_from_radius_is_not_held_against_the_client(policy: dict[str, Any]) -> None:
    down = policy["radius_down"]
    assert down["failures"] == ["E=691: RADIUS servers did not answer"] * 3
    assert down["throttled"] == 0 and down["auth_failed"] == 3


# ---- single-session ------------------------------------------------------------------------


def test_replace_ends_the_old_session_with_port_preempted(policy: dict[str, Any]) -> None:
    replace = policy["single_session"]["replace"]
    assert replace["second_up"] and replace["second_pings"] == 3 and replace["replaced"] == 1
    assert replace["first_reason"] == "peer sent Terminate-Request"  # told, not just dropped
    alice = [(record["Acct-Status-Type"][0], record.get("Acct-Terminate-Cause", [None])[0])
             for record in policy["detail"] if record.get("User-Name") == ["alice"]]
    assert alice == [("Start", None), ("Stop", "Port-Preempted"), ("Start", None), ("Stop", "User-Request")]


def test_deny_refuses_the_second_login_and_says_why(policy: dict[str, Any]) -> None:
    single = policy["single_session"]
    assert single["apply"] == ["changed vpn sstp limits single-session: replace -> deny"]
    deny = single["deny"]
    assert not deny["third_up"] and deny["third_failure"] == "E=691: user alice already has a session"
    assert deny["second_pings"] == 3
    assert policy["statistics"]["refused"]["refused_single_session"] == 1
    assert any(": refused: user alice already has a session (lrc" in line
               and line.endswith("); single-session deny") for line in policy["logs"])


# ---- host-name and http-error ----------------------------------------------------------------


def test_host_name_is_required_in_sni_and_host(policy: dict[str, Any]) -> None:
    cases = policy["host_name"]
    assert cases["other_sni"]["handshake"] == cases["no_sni"]["handshake"] == "TLSV1_UNRECOGNIZED_NAME"
    assert cases["upper_case_sni"]["answer"].startswith("HTTP/1.1 200 OK\r\n")
    assert cases["other_host"]["answer"].startswith("HTTP/1.1 404 Not Found\r\n")
    refused = policy["statistics"]["refused"]
    assert refused["refused_host_name_sni"] == 2 and refused["refused_host_name_http"] == 1
    assert "- - 127.0.0.12:" in next(line for line in policy["logs"] if "TLS refused: no SNI" in line)


def test_http_error_policies(policy: dict[str, Any]) -> None:
    answers = policy["http_error"]
    assert answers["allow"]["answer"].startswith("HTTP/1.1 404 Not Found\r\n")
    assert answers["deny"] == {"handshake": "ok", "answer": "", "closed": True}
    redirect = answers["https://portal.example.com/"]["answer"]
    assert redirect.startswith("HTTP/1.1 301 Moved Permanently\r\n")
    assert "\r\nLocation: https://portal.example.com/\r\n" in redirect
    assert all("vpnd" not in case["answer"].lower() for case in answers.values())  # no software named
