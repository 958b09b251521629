"""Durations counted into fixed buckets where they are measured, read whole by the metrics exporter.

The parts that measure (the RADIUS client, the daemon's session set-up) must not depend on the
exporter, which may be off: they count here, with one bisect per observation, and
`vpnd.server.metrics` turns the counts into Prometheus histograms at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

# RADIUS round trips: a LAN server answers in milliseconds, a remote one in tens; 3 s is the
# default per-try timeout.
RADIUS_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# TCP accept to the first network protocol up: TLS, SSTP, LCP, authentication (RADIUS, throttle
# waits) and IPCP, bounded by negotiation-timeout per phase.
SETUP_TIME_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class Histogram:
    """Counts of observations per bucket; ``bounds`` are the buckets' upper bounds (inclusive, as
    Prometheus's ``le``), and one more bucket takes what lies above the last."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    sum: float = 0.0

    def __post_init__(self) -> None:
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be increasing")
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it), ending with (+inf, count)."""
        running, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out
