"""The abuse limits' bookkeeping (vpnd.server.limits) on a fake clock: token buckets per source,
authentication throttling, the refusal log, and the bounds on their memory."""

from __future__ import annotations

import pytest

from vpnd.server.limits import (
    Admission,
    AuthThrottle,
    ConnectionRateLimit,
    RefusalLog,
    RefusalSummary,
    ThrottleReason,
    ThrottleSettings,
    ThrottleTables,
    ThrottleVerdict,
    source_key,
)


def test_source_keys_group_ipv6_by_64() -> None:
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("not-an-address") == "not-an-address"


# ---- connection rate ------------------------------------------------------------------------


def test_rate_from_config() -> None:
    per_second = ConnectionRateLimit.from_config("10/sec", None, None)
    assert (per_second.per_second, per_second.burst, per_second.block_seconds) == (10, 10, 60.0)
    per_minute = ConnectionRateLimit.from_config("30/min", 5, 120)
    assert (per_minute.per_second, per_minute.burst, per_minute.block_seconds) == (0.5, 5, 120.0)
    for bad in ("0/sec", "10/hour", "ten/sec"):
        with pytest.raises(ValueError):
            ConnectionRateLimit.from_config(bad, None, None)


def test_burst_then_rate_then_block() -> None:
    limit = ConnectionRateLimit(per_second=1.0, burst=3, block_seconds=60)
    now = 1000.0
    assert [limit.admit("a", now) for _ in range(3)] == [Admission.ADMITTED] * 3
    assert limit.admit("a", now) is Admission.LIMITED
    assert limit.blocked_until("a") == now + 60
    # Blocked: refused even though the bucket refills meanwhile, and another source is untouched.
    assert limit.admit("a", now + 30) is Admission.BLOCKED
    assert limit.admit("b", now + 30) is Admission.ADMITTED
    assert limit.admit("a", now + 59.9) is Admission.BLOCKED
    # After the block the refilled bucket is used again.
    assert [limit.admit("a", now + 60) for _ in range(3)] == [Admission.ADMITTED] * 3
    assert limit.admit("a", now + 60) is Admission.LIMITED


def test_a_source_at_the_rate_is_never_blocked() -> None:
    limit = ConnectionRateLimit(per_second=0.5, burst=1, block_seconds=60)  # 30/min, burst 1
    assert all(limit.admit("a", 2.0 * i) is Admission.ADMITTED for i in range(100))
    limit.admit("b", 0.0)
    assert limit.admit("b", 1.0) is Admission.LIMITED  # faster than the rate


def test_rate_table_is_bounded_and_forgets_refilled_buckets() -> None:
    limit = ConnectionRateLimit(per_second=1.0, burst=2, block_seconds=10, max_entries=100)
    for i in range(10_000):  # an attacker with many addresses
        limit.admit(f"10.{i // 256 % 256}.{i % 256}.1", 0.0)
        assert len(limit) <= 100
    assert len(limit) == 100
    # Two seconds later every bucket is full again: the next calls sweep them away.
    for i in range(20):
        limit.admit(f"192.0.2.{i}", 2.0)
    assert len(limit) < 100


def test_a_blocked_source_is_not_swept_before_its_block_ends() -> None:
    limit = ConnectionRateLimit(per_second=1.0, burst=1, block_seconds=50)
    limit.admit("a", 0.0)
    assert limit.admit("a", 0.0) is Admission.LIMITED
    for i in range(30):
        limit.admit(f"other-{i}", 10.0 + i)
    assert limit.admit("a", 45.0) is Admission.BLOCKED
    assert limit.admit("a", 50.0) is Admission.ADMITTED


# ---- authentication throttle ----------------------------------------------------------------

A, B = "198.51.100.1", "203.0.113.9"


def _held(throttle: AuthThrottle, source: str, user: str, now: float) -> ThrottleVerdict:
    verdict = throttle.assess(source, user, now)
    assert verdict is not None, f"{user} from {source} is not held"
    return verdict


def _fail(throttle: AuthThrottle, pairs: list[tuple[str, str]], now: float = 0.0) -> None:
    for source, user in pairs:
        throttle.failed(source, user, now)


def test_failures_of_a_pair_double_the_wait_up_to_the_cap() -> None:
    throttle = AuthThrottle(ThrottleSettings(cap=30.0, window=600))
    assert throttle.assess(A, "alice", 0.0) is None
    waits = []
    for step in range(8):
        throttle.failed(A, "alice", float(step))
        waits.append(_held(throttle, A, "alice", float(step)))
    assert [verdict.wait for verdict in waits] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert waits[5] == ThrottleVerdict(30.0, ThrottleReason.PAIR, 6)
    assert ThrottleSettings(cap=0.5).delay(3) == 0.5  # a cap below 1 s is also the first wait


def test_one_users_failures_do_not_hold_others_behind_the_same_address() -> None:
    throttle = AuthThrottle(ThrottleSettings())
    _fail(throttle, [(A, "alice")] * 6)
    assert throttle.assess(A, "bob", 0.0) is None  # the scenario
    assert _held(throttle, A, "alice", 0.0).wait == 30.0
    # alice from elsewhere: her name failed from one address, the first step of the user's wait.
    assert throttle.assess(B, "alice", 0.0) == ThrottleVerdict(1.0, ThrottleReason.USER, 1)


def test_a_name_failing_from_many_addresses_waits_everywhere_but_where_it_got_in() -> None:
    throttle = AuthThrottle(ThrottleSettings())
    throttle.succeeded("192.0.2.50", "alice", 0.0)  # alice's own office, yesterday
    _fail(throttle, [(f"10.0.0.{i}", "alice") for i in range(20)], 10.0)
    assert throttle.assess("10.0.0.99", "alice", 10.0) == ThrottleVerdict(30.0, ThrottleReason.USER, 20)
    assert _held(throttle, "10.0.0.3", "alice", 10.0).reason is ThrottleReason.USER  # 30 s > the pair's 1 s
    assert throttle.assess("192.0.2.50", "alice", 10.0) is None  # trusted: not held by others
    assert all(throttle.assess(f"10.0.0.{i}", "bob", 10.0) is None for i in range(21))


def test_spraying_slows_new_names_past_the_threshold_only() -> None:
    throttle = AuthThrottle(ThrottleSettings(spraying_threshold=20))
    throttle.succeeded(A, "carol", 0.0)
    waits = []
    for i in range(26):
        verdict = throttle.assess(A, "dave", 1.0)
        waits.append(verdict.wait if verdict is not None else 0.0)
        throttle.failed(A, f"user{i}", 1.0)
    assert waits == [0.0] * 21 + [1, 2, 4, 8, 16]
    assert throttle.assess(A, "dave", 1.0) == ThrottleVerdict(30.0, ThrottleReason.SPRAYING_ADDRESS, 26)
    assert throttle.assess(A, "carol", 1.0) is None  # logged in from A recently
    assert throttle.assess(B, "dave", 1.0) is None  # dave from elsewhere
    assert throttle.tables(1.0).spraying_addresses == 1
    off = AuthThrottle(ThrottleSettings(spraying_threshold=0))
    _fail(off, [(A, f"user{i}") for i in range(100)])
    assert off.assess(A, "dave", 0.0) is None


def test_a_users_success_explains_its_own_failures() -> None:
    throttle = AuthThrottle(ThrottleSettings(spraying_threshold=2))
    _fail(throttle, [(A, "alice"), (A, "alice"), (A, "bob"), (A, "carol")])
    assert _held(throttle, A, "dave", 0.0).reason is ThrottleReason.SPRAYING_ADDRESS
    throttle.succeeded(A, "alice", 1.0)  # alice's typos were hers: A is back to two failing names
    assert throttle.assess(A, "dave", 1.0) is None
    assert throttle.assess(A, "alice", 1.0) is None
    assert throttle.assess(B, "alice", 1.0) is None


def test_trust_and_failures_are_forgotten_in_time() -> None:
    throttle = AuthThrottle(ThrottleSettings(window=600, spraying_threshold=1, trust_time=3600))
    throttle.succeeded(A, "carol", 0.0)
    for _ in range(4):
        throttle.failed(B, "erin", 100.0)
    assert _held(throttle, B, "erin", 699.0).wait == 8.0
    assert throttle.assess(B, "erin", 700.0) is None  # 600 s after the last failure
    throttle.failed(B, "erin", 700.0)  # counting starts over
    assert _held(throttle, B, "erin", 700.0).wait == 1.0
    _fail(throttle, [(A, "x"), (A, "y"), (A, "z")], 3300.0)
    assert throttle.assess(A, "carol", 3599.0) is None
    assert _held(throttle, A, "carol", 3600.0).reason is ThrottleReason.SPRAYING_ADDRESS  # trust expired
    assert throttle.tables(3600.0) == ThrottleTables(3, 3, 1, 1, 0)


def test_an_outcome_does_not_change_the_wait_of_its_own_attempt() -> None:
    """The wait is decided from the keys before the backend is asked; whatever the password, two
    attempts with the same keys and history wait the same."""
    first, second = AuthThrottle(ThrottleSettings()), AuthThrottle(ThrottleSettings())
    for throttle in (first, second):
        _fail(throttle, [(A, "alice")] * 3)
    assert first.assess(A, "alice", 5.0) == second.assess(A, "alice", 5.0) == ThrottleVerdict(
        4.0, ThrottleReason.PAIR, 3)


def test_throttle_memory_is_bounded() -> None:
    throttle = AuthThrottle(ThrottleSettings(window=60), max_pairs=50, max_trusted=20)
    for i in range(5000):
        now = float(i) / 100
        throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i % 700}", now)
        throttle.succeeded(f"10.1.{i // 256}.{i % 256}", f"user{i}", now)
        tables = throttle.tables(now)
        assert tables.failing_pairs <= 50 and tables.trusted_pairs <= 20
        assert tables.failing_users <= 50 and tables.failing_addresses <= 50
    assert throttle.tables(50.0) == ThrottleTables(50, 50, 50, 0, 20)
    throttle.failed("192.0.2.1", "x", 10_000.0)  # failures are long forgotten, trust is not
    assert throttle.tables(10_000.0) == ThrottleTables(1, 1, 1, 0, 20)
    assert throttle.tables(700_000.0) == ThrottleTables(0, 0, 0, 0, 0)  # a week on, nor is trust


# ---- refusal log ----------------------------------------------------------------------------


def test_first_refusal_is_logged_then_one_summary_per_interval() -> None:
    refusals = RefusalLog(interval=60)
    assert refusals.note("198.51.100.1", "refused_connection_rate", 0.0) is True
    assert refusals.note("198.51.100.1", "refused_source_blocked", 1.0) is True  # another cause
    assert [refusals.note("198.51.100.1", "refused_source_blocked", 2.0) for _ in range(3)] == [False] * 3
    assert refusals.note("203.0.113.5", "tls_handshake_failed", 10.0) is True
    assert refusals.next_due() == 60.0
    assert refusals.due(59.0) == []
    assert refusals.due(61.0) == [RefusalSummary("198.51.100.1", 3, {"refused_source_blocked": 3}, 60)]
    assert refusals.due(70.0) == []  # 203.0.113.5 had nothing more: no summary, just forgotten
    assert len(refusals) == 0 and refusals.next_due() is None
    assert refusals.note("198.51.100.1", "refused_connection_rate", 70.0) is True  # a new interval
    assert RefusalSummary("198.51.100.1", 3, {"b": 2, "a": 1}, 60).text() == \
        "3 more refused from 198.51.100.1 in the last 60 s (a 1, b 2)"


def test_a_refusal_after_the_interval_closes_the_old_window_first() -> None:
    refusals = RefusalLog(interval=60)
    refusals.note("a", "x", 0.0)
    refusals.note("a", "x", 5.0)
    assert refusals.note("a", "x", 65.0) is True
    assert refusals.next_due() == 0.0
    assert refusals.due(65.0) == [RefusalSummary("a", 1, {"x": 1}, 60)]


def test_more_sources_than_the_table_holds_are_summed_up_together() -> None:
    refusals = RefusalLog(interval=60, max_entries=10)
    logged = sum(refusals.note(f"10.0.0.{i}", "refused_max_concurrent", 1.0) for i in range(200))
    assert logged == 10 and len(refusals) == 10
    summaries = refusals.due(61.0)
    assert summaries == [RefusalSummary(None, 190, {"refused_max_concurrent": 190}, 60)]
    assert "from other sources" in summaries[0].text()
    assert refusals.note("10.0.0.199", "refused_max_concurrent", 62.0) is True


def test_throttle_lines_are_one_per_subject_whatever_the_reason() -> None:
    held = RefusalLog(interval=60, per_cause=False, action="attempts held", preposition="for")
    assert held.note("user alice", "pair", 0.0) is True
    assert held.note("user alice", "user", 1.0) is False  # another reason, same user: no new line
    assert held.note("user alice", "pair", 2.0) is False
    assert held.note("address 198.51.100.1", "spraying_address", 3.0) is True
    summaries = held.due(61.0)
    assert summaries == [RefusalSummary("user alice", 2, {"pair": 1, "user": 1}, 60, "attempts held", "for")]
    assert summaries[0].text() == "2 more attempts held for user alice in the last 60 s (pair 1, user 1)"
