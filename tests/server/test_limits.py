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


def test_failures_double_the_wait_up_to_the_cap() -> None:
    throttle = AuthThrottle(base=1.0, cap=30.0, forget_after=600)
    assert throttle.delay("198.51.100.1", "alice", 0.0) == 0.0
    waits = []
    for step in range(8):
        throttle.failed("198.51.100.1", "alice", float(step))
        waits.append(throttle.delay("198.51.100.1", "alice", float(step)))
    assert waits == [1, 2, 4, 8, 16, 30, 30, 30]


def test_the_longer_of_source_and_user_applies() -> None:
    throttle = AuthThrottle()
    for _ in range(3):
        throttle.failed("198.51.100.1", "alice", 0.0)  # one source guessing alice's password
    assert throttle.delay("198.51.100.1", "bob", 0.0) == 4.0  # the source waits for any user
    assert throttle.delay("203.0.113.9", "alice", 0.0) == 4.0  # alice waits from anywhere
    assert throttle.delay("203.0.113.9", "bob", 0.0) == 0.0
    for index in range(5):  # a distributed guess at bob: each source fails once
        throttle.failed(f"203.0.113.{index}", "bob", 0.0)
    assert throttle.delay("203.0.113.200", "bob", 0.0) == 16.0
    assert throttle.failures("203.0.113.1", "bob", 0.0) == (1, 5)


def test_success_and_quiet_reset() -> None:
    throttle = AuthThrottle(forget_after=600)
    for _ in range(4):
        throttle.failed("198.51.100.1", "alice", 0.0)
    throttle.succeeded("198.51.100.1", "alice")
    assert throttle.delay("198.51.100.1", "alice", 1.0) == 0.0
    for _ in range(4):
        throttle.failed("198.51.100.2", "carol", 100.0)
    assert throttle.delay("198.51.100.2", "carol", 699.0) == 8.0
    assert throttle.delay("198.51.100.2", "carol", 700.0) == 0.0
    throttle.failed("198.51.100.2", "carol", 700.0)  # counting starts over after the quiet period
    assert throttle.delay("198.51.100.2", "carol", 700.0) == 1.0


def test_throttle_memory_is_bounded() -> None:
    throttle = AuthThrottle(max_entries=50, forget_after=60)
    for i in range(5000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}", f"user{i}", float(i) / 100)
    assert len(throttle) == 100  # 50 sources + 50 user names
    for i in range(4):  # everything else is long forgotten: each call sweeps some of it away
        throttle.failed(f"192.0.2.{i}", f"x{i}", 10_000.0)
    assert len(throttle) == 8


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
