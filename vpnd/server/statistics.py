"""What the daemon counts: events by name, refusals by cause, held logins, set-up failures and
set-up times. Read by `show statistics` and the metrics exporter."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from vpnd.histogram import SETUP_TIME_BUCKETS, Histogram
from vpnd.server.limits import ThrottleReason


@dataclass
class Statistics:
    started: float = field(default_factory=time.time)
    counters: Counter[str] = field(default_factory=Counter)
    refusal_causes: set[str] = field(default_factory=set)  # the counters that count refusals
    # Authentication attempts held by the throttle, by the reason that set the wait (one each).
    throttled: Counter[ThrottleReason] = field(default_factory=Counter)
    setup_failures: Counter[str] = field(default_factory=Counter)  # sessions that never came up, by cause
    setup_seconds: Histogram = field(default_factory=lambda: Histogram(SETUP_TIME_BUCKETS))

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def refused(self, cause: str) -> None:
        self.refusal_causes.add(cause)
        self.counters[cause] += 1

    def refusals(self) -> dict[str, int]:
        return {cause: self.counters[cause] for cause in sorted(self.refusal_causes)}
