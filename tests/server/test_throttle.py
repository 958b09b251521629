"""The login throttle on the real daemon (scenario_throttle.py, in a namespace of its own): it
slows down what is being guessed, not the people who share an address. The throttle's
bookkeeping on a fake clock is tested in test_limits.py; through HAProxy in
tests/interop/test_haproxy_throttle.py. About a minute on this shared 2-core machine."""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.scenario_throttle import FLOOD_PAIRS, FLOOD_TRUSTED, SPRAYER
from tests.support.scenario import run_scenario
from vpnd.cli.opmode import statistics_lines

pytestmark = pytest.mark.root

CAP = 2.0  # authentication-failure-delay in the scenario
# A held attempt waits at least its wait; an unheld one is as fast as the baseline within this
# much (generous: the machine is shared and noisy).
NOISE = 0.5


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    return run_scenario("tests.server.scenario_throttle", timeout=300)


def _unheld(login: dict[str, Any], baseline: dict[str, Any]) -> None:
    assert login["up"], login
    assert login["held"] == {}, login
    assert login["seconds"] < baseline["seconds"] + NOISE, (login, baseline)


def test_one_users_failures_do_not_hold_colleagues_behind_the_same_address(outcome: dict[str, Any]) -> None:
    nat = outcome["nat"]
    baseline = nat["bob_before"]
    assert baseline["up"] and baseline["held"] == {} and baseline["seconds"] < 1.0
    wrong = nat["alice_wrong"]
    assert [w["failure"] for w in wrong] == ["E=691: Authentication failed"] * 6
    assert [w["held"] for w in wrong] == [{}] + [{"pair": 1}] * 5  # 1 s, then 2 s (the cap)
    _unheld(nat["bob_after"], baseline)
    _unheld(nat["dave_after"], baseline)  # no success from there before: not held either
    assert nat["bob_after"]["seconds"] < 1.0


def test_the_guessed_pair_waits_even_with_the_right_password(outcome: dict[str, Any]) -> None:
    alice = outcome["nat"]["alice_next"]
    assert alice["up"] and alice["held"] == {"pair": 1}
    assert alice["seconds"] >= CAP  # the answer comes after the wait, whatever the password


def test_a_name_failing_from_many_addresses_is_held_everywhere_else(outcome: dict[str, Any]) -> None:
    many = outcome["many_addresses"]
    assert all(w["failure"] == "E=691: Authentication failed" for w in many["wrong"])
    elsewhere = many["alice_elsewhere"]
    assert elsewhere["up"] and elsewhere["held"] == {"user": 1} and elsewhere["seconds"] >= CAP
    baseline = outcome["nat"]["bob_before"]
    _unheld(many["alice_at_nat"], baseline)  # she logged in from there: others' failures do not hold her
    for login in many["others"]:  # bob and carol from the guessing addresses and beyond
        _unheld(login, baseline)
    tables = many["tables"]["tables"]
    assert tables["failing_users"] == 1 and tables["failing_addresses"] == 20


def test_spraying_holds_new_names_from_that_address_only(outcome: dict[str, Any]) -> None:
    spraying = outcome["spraying"]
    groups = spraying["groups"]
    assert [group["failures"] for group in groups] == [10] * 5
    sprayed = [group["held"]["spraying_address"] for group in groups]
    assert sprayed[:2] == [0, 0]  # 20 distinct failing names are below the threshold
    assert sprayed[2] >= 8 and sprayed[3:] == [10, 10]  # past it, every new name waits
    assert all(group["held"]["pair"] == group["held"]["user"] == 0 for group in groups)
    dave = spraying["dave_at_sprayer"]
    assert dave["up"] and dave["held"] == {"spraying_address": 1} and dave["seconds"] >= CAP
    baseline = outcome["nat"]["bob_before"]
    _unheld(spraying["dave_elsewhere"], baseline)
    _unheld(spraying["carol_again"], baseline)  # logged in from the sprayer's address before


def test_statistics_and_log_say_what_is_held(outcome: dict[str, Any]) -> None:
    throttle = outcome["statistics"]["auth_throttle"]
    assert set(throttle["held"]) == {"pair", "user", "spraying_address"}
    assert throttle["held"]["spraying_address"] == sum(
        group["held"]["spraying_address"] for group in outcome["spraying"]["groups"]) + 1
    assert throttle["tables"]["spraying_addresses"] == 1
    held = [line for line in outcome["info_logs"] if "authentication held" in line]
    sprayer = [line for line in held if f"from {SPRAYER} (password spraying?)" in line]
    assert len(sprayer) == 1  # once a minute per address, however many attempts it held
    assert sprayer[0].endswith("has not logged in from there recently")
    assert any(line.endswith(": 1 recent failed login of alice from 127.0.1.1") for line in held)
    assert len([line for line in held if " of alice " in line]) <= 2  # pair and user: one line a minute


def test_show_statistics_lists_held_attempts_by_reason(outcome: dict[str, Any]) -> None:
    throttle = outcome["statistics"]["auth_throttle"]
    held, tables = throttle["held"], throttle["tables"]
    lines = statistics_lines(outcome["statistics"])
    heading = lines.index(f"authentication held: {sum(held.values())}")
    assert lines[heading + 1:heading + 5] == [
        f"  pair: {held['pair']}", f"  user: {held['user']}",
        f"  spraying_address: {held['spraying_address']}",
        f"  remembered: failing pairs {tables['failing_pairs']}, spraying addresses 1, "
        f"trusted pairs {tables['trusted_pairs']}"]


def test_tables_stay_bounded_under_a_flood_of_names_and_addresses(outcome: dict[str, Any]) -> None:
    flood = outcome["flood"]
    samples = flood["samples"]
    assert all(sample["failing_pairs"] <= FLOOD_PAIRS and sample["trusted_pairs"] <= FLOOD_TRUSTED
               and sample["failing_users"] <= FLOOD_PAIRS and sample["failing_addresses"] <= FLOOD_PAIRS
               for sample in samples), samples
    assert samples[-1]["failing_pairs"] == FLOOD_PAIRS and samples[-1]["trusted_pairs"] == FLOOD_TRUSTED
    assert flood["carol_after"]["up"] and flood["carol_after"]["held"] == {}
