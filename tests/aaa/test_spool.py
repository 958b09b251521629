"""The accounting spool: order, durability across restarts, torn records, bounds, group commit."""

from __future__ import annotations

import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from vpnd.aaa import spool as spool_module
from vpnd.aaa.spool import NAS_KEY, RecordKind, Spool


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def start_attrs(session: str) -> list[tuple[str, object]]:
    return [("Acct-Status-Type", "Start"), ("Acct-Session-Id", session), ("User-Name", "alice"),
            ("Framed-IP-Address", IPv4Address("10.0.0.5")), ("Class", b"\x00\xffcls")]


def add(spool: Spool, kind: RecordKind, session: str, n: int = 0):  # type: ignore[no-untyped-def]
    attrs = start_attrs(session) if kind is RecordKind.START else [("Acct-Session-Id", session), ("n", n)]
    return spool.append(kind, session, attrs)  # type: ignore[arg-type]


def deliver_all(spool: Spool) -> list[tuple[str, RecordKind]]:
    """Drain the spool the way the sender does: deliverable heads, acked, committed."""
    order: list[tuple[str, RecordKind]] = []
    while spool.pending_count:
        batch = spool.deliverable()
        assert batch, "pending records but nothing deliverable"
        for record in batch:
            order.append((record.session_key, record.kind))
            spool.ack(record.seq)
        spool.commit()
    return order


def test_round_trip_of_attribute_types(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    record = add(spool, RecordKind.START, "s1")
    spool.close()
    reloaded = Spool(tmp_path).pending()
    assert [r.attributes for r in reloaded] == [record.attributes]
    assert dict(reloaded[0].attributes)["Framed-IP-Address"] == IPv4Address("10.0.0.5")
    assert dict(reloaded[0].attributes)["Class"] == b"\x00\xffcls"


def test_per_session_order_and_one_in_flight_per_session(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "a")
    add(spool, RecordKind.START, "b")
    add(spool, RecordKind.INTERIM, "a", 1)
    add(spool, RecordKind.STOP, "a", 2)
    add(spool, RecordKind.STOP, "b", 3)
    first = spool.deliverable()
    assert [(r.session_key, r.kind) for r in first] == [("a", RecordKind.START), ("b", RecordKind.START)]
    # a's Start is in flight: only b may go, and b's next is its Stop.
    spool.ack(first[1].seq)
    spool.commit()
    assert [(r.session_key, r.kind) for r in spool.deliverable(busy={"a"})] == [("b", RecordKind.STOP)]
    assert deliver_all(spool) == [("a", RecordKind.START), ("b", RecordKind.STOP),
                                  ("a", RecordKind.INTERIM), ("a", RecordKind.STOP)]


def test_nas_wide_record_is_a_barrier(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.STOP, "old")
    spool.append(RecordKind.ACCOUNTING_ON, NAS_KEY, [("Acct-Status-Type", "Accounting-On")])
    add(spool, RecordKind.START, "new")
    assert [r.session_key for r in spool.deliverable()] == ["old"]
    assert spool.deliverable(busy={"old"}) == []
    assert deliver_all(spool) == [("old", RecordKind.STOP), (NAS_KEY, RecordKind.ACCOUNTING_ON),
                                  ("new", RecordKind.START)]


def test_restart_reloads_only_unacknowledged_records(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    records = [add(spool, RecordKind.START, f"s{i}") for i in range(5)]
    spool.ack(records[1].seq)
    spool.ack(records[3].seq)
    spool.commit()
    # No close(): a crash keeps only what commit() made durable.
    reloaded = Spool(tmp_path)
    assert [r.session_key for r in reloaded.pending()] == ["s0", "s2", "s4"]
    assert reloaded.pending()[0].created_at == records[0].created_at
    # New records continue after the old ones and stay behind them.
    later = add(reloaded, RecordKind.STOP, "s0")
    assert later.seq > records[-1].seq
    assert deliver_all(reloaded)[:2] == [("s0", RecordKind.START), ("s2", RecordKind.START)]


def test_fully_acknowledged_segments_are_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=600)
    for i in range(20):
        add(spool, RecordKind.START, f"s{i}")
    segments = sorted(tmp_path.glob("*.seg"))
    assert len(segments) > 3
    first, second = spool.pending()[:2]  # two records fit in one segment
    spool.ack(first.seq)
    spool.commit()
    assert sorted(tmp_path.glob("*.seg")) == segments  # the first segment still has a record
    spool.ack(second.seq)
    spool.commit()
    assert sorted(tmp_path.glob("*.seg")) == segments[1:]
    deliver_all(spool)
    assert list(tmp_path.glob("*.seg")) == [] and list(tmp_path.glob("*.ack")) == []
    assert spool.stats().records == 0 and spool.stats().segments == 0
    assert Spool(tmp_path).pending() == []


def test_torn_last_record_is_ignored_and_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "a")
    add(spool, RecordKind.START, "b")
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # power cut in the middle of the second record
    reloaded = Spool(tmp_path)
    assert [r.session_key for r in reloaded.pending()] == ["a"]
    assert reloaded.stats().torn_records == 1
    # The torn tail is gone, so a new record is readable after another restart.
    add(reloaded, RecordKind.START, "c")
    reloaded.close()
    assert [r.session_key for r in Spool(tmp_path).pending()] == ["a", "c"]


def test_flipped_bit_fails_the_checksum(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "a")
    add(spool, RecordKind.START, "b")
    spool.close()
    segment = next(tmp_path.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0x01
    segment.write_bytes(bytes(data))
    assert [r.session_key for r in Spool(tmp_path).pending()] == ["a"]


def test_torn_ack_entry_is_ignored(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a = add(spool, RecordKind.START, "a")
    b = add(spool, RecordKind.START, "b")
    add(spool, RecordKind.START, "c")
    spool.ack(a.seq)
    spool.ack(b.seq)
    spool.commit()
    ack_file = next(tmp_path.glob("*.ack"))
    ack_file.write_bytes(ack_file.read_bytes()[:-5])  # b's ack torn: b is sent again (never lost)
    assert [r.session_key for r in Spool(tmp_path).pending()] == ["b", "c"]


def test_bounds_refuse_interims_first_and_never_drop_stops_silently(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_records=10, interim_reserve=0.5)
    for i in range(4):
        add(spool, RecordKind.START, f"s{i}")
    assert add(spool, RecordKind.INTERIM, "s0", 1) is not None  # 5 of 10: at the reserve
    assert add(spool, RecordKind.INTERIM, "s1", 1) is None  # above the reserve: refused
    for i in range(4, 9):
        assert add(spool, RecordKind.START, f"s{i}") is not None
    assert spool.pending_count == 10
    # Full: a Stop evicts the pending Interim rather than being refused.
    assert add(spool, RecordKind.STOP, "s0", 2) is not None
    assert spool.pending_count == 10
    assert all(r.kind is not RecordKind.INTERIM for r in spool.pending())
    # Full and no Interim left: refused, counted.
    assert add(spool, RecordKind.STOP, "s1", 2) is None
    stats = spool.stats()
    assert stats.refused["interim"] == 1 and stats.refused["stop"] == 1 and stats.evicted_interims == 1
    # The eviction is durable: the evicted Interim does not come back after a restart.
    spool.close()
    assert [r.kind for r in Spool(tmp_path).pending()].count(RecordKind.INTERIM) == 0


def test_byte_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1000)
    accepted = 0
    while add(spool, RecordKind.START, f"session-{accepted}") is not None:
        accepted += 1
    assert 0 < accepted < 20
    assert spool.stats().bytes <= 1000
    assert spool.stats().refused["start"] == 1


def test_group_commit_uses_one_fsync_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "warm")  # creates the files
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync)
    for i in range(50):
        assert spool.stage(RecordKind.START, f"s{i}", start_attrs(f"s{i}")) is not None  # type: ignore[arg-type]
    assert synced == []
    # Staged records are not deliverable before they are durable.
    assert [r.session_key for r in spool.deliverable()] == ["warm"]
    spool.commit()
    assert len(synced) == 2  # the segment and the session journal, once each for 50 records
    assert len(spool.deliverable()) == 51


def test_open_sessions_survive_restart_after_start_left_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "a")
    add(spool, RecordKind.START, "b")
    spool.append(RecordKind.INTERIM, "a", [("Acct-Session-Time", 60), ("Acct-Input-Octets", 1234)])
    add(spool, RecordKind.STOP, "b")
    deliver_all(spool)
    assert list(tmp_path.glob("*.seg")) == []
    opened = Spool(tmp_path).open_sessions()
    assert list(opened) == ["a"]
    assert dict(opened["a"].attributes)["User-Name"] == "alice"
    assert dict(opened["a"].progress)["Acct-Input-Octets"] == 1234


def test_start_in_segment_without_journal_entry_counts_as_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    add(spool, RecordKind.START, "a")
    spool.close()
    (tmp_path / "sessions.log").write_bytes(b"")  # as if the crash came between the two writes
    assert list(Spool(tmp_path).open_sessions()) == ["a"]


def test_journal_is_compacted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, journal_compact_bytes=16 << 10)
    for i in range(200):
        add(spool, RecordKind.START, f"s{i}")
        add(spool, RecordKind.STOP, f"s{i}")
        for record in spool.deliverable():
            spool.ack(record.seq)
        spool.commit()
    add(spool, RecordKind.START, "last")
    assert (tmp_path / "sessions.log").stat().st_size < 20 << 10  # 200 sessions wrote ~50 KiB
    assert list(Spool(tmp_path, journal_compact_bytes=16 << 10).open_sessions()) == ["last"]


def test_depth_statistics(tmp_path: Path) -> None:
    clock = FakeClock()
    spool = Spool(tmp_path, clock=clock)
    assert spool.stats().oldest_age is None
    add(spool, RecordKind.START, "a")
    clock.now += 42
    add(spool, RecordKind.START, "b")
    stats = spool.stats()
    assert stats.records == 2
    assert stats.bytes == sum(r.size for r in spool.pending()) == stats.disk_bytes
    assert stats.oldest_age == 42
