"""What the kernel of the current network namespace holds, per device: for leak and leftover checks.

``snapshot()`` reads links (kind, alias), routes of every table (IPv4 and IPv6, counted by their
output device), qdiscs, tc classes and ingress filters through rtnetlink (pyroute2). Only counts
are kept: a check compares two snapshots (``added``), e.g. before sessions and after a crashed
daemon was restarted. pyroute2's synchronous IPRoute runs a private event loop, so call it off a
running loop (``await asyncio.to_thread(snapshot)``).
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from pyroute2 import IPRoute

NO_DEVICE = "-"  # routes without an output device (blackhole, multipath)
DEFAULT_QDISCS = frozenset({"noqueue", "noop", "pfifo_fast", "fq_codel", "mq"})  # what a new device gets


@dataclass(frozen=True, slots=True)
class DeviceState:
    kind: str
    alias: str
    routes: int
    qdiscs: int  # beyond the default one a device gets
    classes: int
    filters: int


def snapshot() -> dict[str, DeviceState]:
    with IPRoute() as ipr:
        names: dict[int, str] = {}
        kinds: dict[str, tuple[str, str]] = {}
        for link in ipr.get_links():
            name = str(link.get_attr("IFLA_IFNAME"))
            names[int(link["index"])] = name
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            kinds[name] = (str(kind or ""), str(link.get_attr("IFLA_IFALIAS") or ""))
        routes: Counter[str] = Counter()
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.route("dump", family=family):  # every table, local included
                oif = route.get_attr("RTA_OIF")
                routes[names.get(int(oif), NO_DEVICE) if oif is not None else NO_DEVICE] += 1
        qdiscs: Counter[str] = Counter()
        for qdisc in ipr.get_qdiscs():
            if str(qdisc.get_attr("TCA_KIND")) not in DEFAULT_QDISCS:
                qdiscs[names.get(int(qdisc["index"]), NO_DEVICE)] += 1
        state: dict[str, DeviceState] = {}
        for index, name in names.items():
            classes = len(ipr.get_classes(index)) if qdiscs[name] else 0
            filters = len(_filters(ipr, index)) if qdiscs[name] else 0
            kind, alias = kinds[name]
            state[name] = DeviceState(kind, alias, routes[name], qdiscs[name], classes, filters)
        if routes[NO_DEVICE]:
            state[NO_DEVICE] = DeviceState("", "", routes[NO_DEVICE], 0, 0, 0)
        return state


def _filters(ipr: Any, index: int) -> list[Any]:
    try:
        return list(ipr.get_filters(index=index, parent=0xFFFF0000))  # ingress
    except Exception:  # no ingress qdisc: the kernel says EINVAL
        return []


def added(before: dict[str, DeviceState], after: dict[str, DeviceState]) -> dict[str, dict[str, Any]]:
    """Devices of ``after`` that ``before`` did not have, and devices of both that hold more
    routes, qdiscs, classes or filters than before (as dicts, for JSON)."""
    out: dict[str, dict[str, Any]] = {}
    for name, state in after.items():
        old = before.get(name)
        counts = ("routes", "qdiscs", "classes", "filters")
        if old is None or any(getattr(state, count) > getattr(old, count) for count in counts):
            out[name] = asdict(state)
    return out


def as_json(state: dict[str, DeviceState]) -> dict[str, dict[str, Any]]:
    return {name: asdict(device) for name, device in state.items()}
