"""Per-session bandwidth limits with tc, through rtnetlink (pyroute2).

Download (server -> client) is shaped on the session interface's egress; upload (client ->
server) arrives as the interface's ingress, where only policing is possible, so it is redirected
to an IFB device of its own and shaped on that device's egress:

    session interface  root 1: htb default 0x10 -- class 1:10 (rate = ceil = download)
                                                     -- leaf 10: pfifo
                       ingress ffff: -- u32 match all -- mirred egress redirect -> IFB
    IFB ("ifb" + ifname) root 1: htb default 0x10 -- class 1:10 (rate = ceil = upload) -- 10: pfifo

HTB rather than TBF: a rate change is a `class change`, which keeps the leaf queue and its
packets (changing a TBF's rate grafts a new inner fifo and drops what was queued), the same
three objects serve both directions, and the class takes 64-bit rates. HTB's default class
catches everything, so no classifier is needed on the egress side.

Every IFB carries an alias naming its owner, "OWNER IFNAME" (OWNER is `owner_tag` of the
instance's state directory): a restart after a crash removes exactly the IFBs its dead
predecessor left (TUNs, their routes and tc go with the dead process's file descriptors; an IFB
stays), never those of another instance beside it, whatever the interface names.

The calls block for a few netlink round trips. pyroute2's synchronous IPRoute runs its own
asyncio loop, so a `Shaper` must be created and used on one thread that runs no event loop: the
daemon's network worker (see vpnd.net.threaded).
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from pyroute2 import IPRoute

from vpnd.net.link import IFNAMSIZ, NetError

ROOT_HANDLE = 0x0001_0000  # 1:
CLASS_HANDLE = 0x0001_0010  # 1:10, also HTB's default class
LEAF_HANDLE = 0x0010_0000  # 10:
INGRESS_HANDLE = 0xFFFF_0000  # ffff:
TC_H_ROOT = 0xFFFF_FFFF
TC_H_INGRESS = 0xFFFF_FFF1
ETH_P_ALL = 0x0003

BURST_SECONDS = 0.010  # tokens for 10 ms at the full rate ...
MIN_BURST_PACKETS = 2  # ... but never less than two full packets
QUEUE_SECONDS = 0.100  # leaf queue: about 100 ms of full-size packets at the rate
MIN_QUEUE_PACKETS = 16
MAX_QUEUE_PACKETS = 1000


class RateSpec(Protocol):
    """What the shaper needs of a rate limit (vpnd.aaa.ratelimit.RateLimit fits): kbit/s, 0 = none."""

    @property
    def download_kbit(self) -> int: ...
    @property
    def upload_kbit(self) -> int: ...


class ShaperBackend(Protocol):
    def apply(self, ifname: str, rate: RateSpec) -> None: ...
    def change(self, ifname: str, rate: RateSpec) -> None: ...
    def remove(self, ifname: str) -> None: ...
    def remove_leftovers(self) -> list[str]: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ClassParameters:
    rate_bytes: int  # bytes per second
    burst_bytes: int
    queue_packets: int


def class_parameters(rate_kbit: int, mtu: int) -> ClassParameters:
    """HTB class and leaf queue sizes for one direction."""
    if rate_kbit <= 0:
        raise ValueError(f"rate {rate_kbit} kbit/s is not a limit")
    rate_bytes = rate_kbit * 125
    burst = max(math.ceil(rate_bytes * BURST_SECONDS), MIN_BURST_PACKETS * mtu)
    queue = math.ceil(rate_bytes * QUEUE_SECONDS / mtu)
    return ClassParameters(rate_bytes, burst, min(max(queue, MIN_QUEUE_PACKETS), MAX_QUEUE_PACKETS))


def ifb_name(ifname: str) -> str:
    """The IFB that carries `ifname`'s upload: "ifb" + the name ("sstp12" -> "ifbsstp12").

    Names that would not fit IFNAMSIZ, or that would look like the kernel's own ifbN devices,
    get "ifb" + 12 hex digits of a hash instead, still one fixed name per interface.
    """
    name = "ifb" + ifname
    if len(name) < IFNAMSIZ and not ifname.isdigit():
        return name
    return "ifb" + hashlib.sha256(ifname.encode()).hexdigest()[:12]


def owner_tag(state_dir: Path) -> str:
    """The mark of one instance on its kernel objects: its state directory, hashed (the directory
    outlives a crash; two instances side by side never share one)."""
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:12]
    return f"vpnd:{digest}"


def _netlink_errno(error: Exception) -> int | None:
    code = getattr(error, "code", None)
    return code if isinstance(code, int) else None


class Shaper:
    """Installs, changes and removes one session's limits (see the module docstring)."""

    def __init__(self, ipr: Any = None, owner: str | None = None) -> None:
        """``owner``: this instance's `owner_tag`; None leaves IFBs unmarked (and nothing to find)."""
        self._owns_ipr = ipr is None
        self._ipr: Any = IPRoute() if ipr is None else ipr
        self.owner = owner

    # -- public ----------------------------------------------------------------------------------

    def apply(self, ifname: str, rate: RateSpec) -> None:
        """Shape a new session: whatever shaping the interface had is replaced.

        A direction with 0 kbit/s is not shaped. A stale IFB of the same name (left by a
        previous run) is deleted and made anew.
        """
        index, mtu = self._link(ifname)
        self._remove_download(ifname, index)
        self._remove_upload(ifname, index)
        if rate.download_kbit:
            self._add_download(ifname, index, class_parameters(rate.download_kbit, mtu))
        if rate.upload_kbit:
            self._add_upload(ifname, index, class_parameters(rate.upload_kbit, mtu))

    def change(self, ifname: str, rate: RateSpec) -> None:
        """New rates for a running session (CoA): classes are changed in place, queues and
        the redirect stay. A direction going to or from 0 kbit/s is removed or added."""
        index, mtu = self._link(ifname)
        if rate.download_kbit == 0:
            self._remove_download(ifname, index)
        elif self._has_own_root(index):
            self._change_class(ifname, index, class_parameters(rate.download_kbit, mtu))
        else:
            self._add_download(ifname, index, class_parameters(rate.download_kbit, mtu))
        ifb = ifb_name(ifname)
        ifb_index = self._ifb_index(ifb)
        if rate.upload_kbit == 0:
            self._remove_upload(ifname, index)
        elif ifb_index is not None and self._has_own_root(ifb_index) and self._has_ingress(index):
            self._change_class(ifb, ifb_index, class_parameters(rate.upload_kbit, mtu))
        else:
            self._remove_upload(ifname, index)
            self._add_upload(ifname, index, class_parameters(rate.upload_kbit, mtu))

    def remove(self, ifname: str) -> None:
        """Take all shaping off: the interface's ingress and root qdiscs (if it still exists;
        a closed TUN takes them with it) and its IFB. Safe to call more than once."""
        found = self._ipr.link_lookup(ifname=ifname)
        if found:
            self._remove_upload(ifname, int(found[0]))
            self._remove_download(ifname, int(found[0]))
        else:
            self._delete_ifb(ifb_name(ifname))

    def remove_leftovers(self) -> list[str]:
        """Delete the devices marked with this instance's owner tag: at start, what a run that
        died without cleaning up left behind. Returns their names."""
        if self.owner is None:
            return []
        removed = []
        for link in self._ipr.get_links():
            alias = link.get_attr("IFLA_IFALIAS") or ""
            if alias.split(" ", 1)[0] != self.owner:
                continue
            name = str(link.get_attr("IFLA_IFNAME"))
            self._delete_link(name, int(link["index"]))
            removed.append(name)
        return removed

    def close(self) -> None:
        if self._owns_ipr:
            self._ipr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- kernel state ----------------------------------------------------------------------------

    def _call(self, what: str, ifname: str, action: Callable[[], object], *tolerated: int) -> None:
        try:
            action()
        except Exception as error:
            code = _netlink_errno(error)
            if code is not None and code in tolerated:
                return
            raise NetError(f"{what} on {ifname} failed: {error}") from error

    def _link(self, ifname: str) -> tuple[int, int]:
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise NetError(f"interface {ifname} does not exist")
        index = int(found[0])
        link = self._ipr.get_links(index)[0]
        return index, int(link.get_attr("IFLA_MTU") or 1500)

    def _qdiscs(self, index: int) -> list[tuple[int, int, str]]:
        """(handle, parent, kind) of every qdisc on the device."""
        return [
            (int(msg["handle"]), int(msg["parent"]), str(msg.get_attr("TCA_KIND")))
            for msg in self._ipr.get_qdiscs(index)
            if int(msg["index"]) == index
        ]

    def _has_own_root(self, index: int) -> bool:
        return (ROOT_HANDLE, TC_H_ROOT, "htb") in self._qdiscs(index)

    def _has_ingress(self, index: int) -> bool:
        return any(parent == TC_H_INGRESS for _handle, parent, _kind in self._qdiscs(index))

    def _ifb_index(self, ifb: str) -> int | None:
        """The IFB's index, or None; a device of that name that is not an IFB is an error (it is
        not ours to replace)."""
        found = self._ipr.link_lookup(ifname=ifb)
        if not found:
            return None
        link = self._ipr.get_links(int(found[0]))[0]
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        if kind != "ifb":
            raise NetError(f"{ifb} exists and is not an IFB device ({kind or 'no kind'}); not touching it")
        return int(found[0])

    # -- directions ------------------------------------------------------------------------------

    def _add_shaping(self, ifname: str, index: int, shape: ClassParameters) -> None:
        """Root HTB, its one class and the leaf queue on `index`'s egress."""
        tc = self._ipr.tc
        default_class = CLASS_HANDLE & 0xFFFF
        htb = self._htb(shape)
        limit = shape.queue_packets
        self._call(
            "adding root htb", ifname, lambda: tc("add", "htb", index, ROOT_HANDLE, default=default_class)
        )
        self._call(
            "adding htb class",
            ifname,
            lambda: tc("add-class", "htb", index, CLASS_HANDLE, parent=ROOT_HANDLE, **htb),
        )
        self._call(
            "adding leaf queue",
            ifname,
            lambda: tc("add", "pfifo", index, LEAF_HANDLE, parent=CLASS_HANDLE, limit=limit),
        )

    def _change_class(self, ifname: str, index: int, shape: ClassParameters) -> None:
        tc = self._ipr.tc
        htb = self._htb(shape)
        limit = shape.queue_packets
        self._call(
            "changing htb class",
            ifname,
            lambda: tc("change-class", "htb", index, CLASS_HANDLE, parent=ROOT_HANDLE, **htb),
        )
        self._call(
            "resizing leaf queue",
            ifname,
            lambda: tc("change", "pfifo", index, LEAF_HANDLE, parent=CLASS_HANDLE, limit=limit),
        )

    @staticmethod
    def _htb(shape: ClassParameters) -> dict[str, int]:
        # quantum only matters between sibling classes; a fixed value keeps the kernel from
        # deriving one from the rate and warning that it is too big or too small.
        return {
            "rate": shape.rate_bytes,
            "ceil": shape.rate_bytes,
            "burst": shape.burst_bytes,
            "cburst": shape.burst_bytes,
            "quantum": 1514,
        }

    def _add_download(self, ifname: str, index: int, shape: ClassParameters) -> None:
        self._add_shaping(ifname, index, shape)

    def _remove_download(self, ifname: str, index: int) -> None:
        if self._has_own_root(index):
            self._call(
                "deleting root qdisc",
                ifname,
                lambda: self._ipr.tc("del", index=index, parent=TC_H_ROOT),
                errno.ENOENT,
            )

    def _add_upload(self, ifname: str, index: int, shape: ClassParameters) -> None:
        ifb = ifb_name(ifname)
        ipr = self._ipr
        # Shaping first, redirect last: no packet is sent to an IFB that is down or unshaped.
        self._call("creating ifb", ifb, lambda: ipr.link("add", ifname=ifb, kind="ifb"))
        ifb_index = self._ifb_index(ifb)
        if ifb_index is None:
            raise NetError(f"{ifb} was created but cannot be found")
        marked = {"ifalias": f"{self.owner} {ifname}"} if self.owner is not None else {}
        self._call("setting ifb up", ifb, lambda: ipr.link("set", index=ifb_index, state="up", **marked))
        self._add_shaping(ifb, ifb_index, shape)
        self._call("adding ingress qdisc", ifname, lambda: ipr.tc("add", "ingress", index, INGRESS_HANDLE))
        self._call(
            "adding redirect to " + ifb,
            ifname,
            lambda: ipr.tc(
                "add-filter",
                "u32",
                index,
                parent=INGRESS_HANDLE,
                prio=1,
                protocol=ETH_P_ALL,
                keys=["0x0/0x0+0"],  # match u32 0 0: every packet
                target=0x1,
                action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb_index},
            ),
        )

    def _remove_upload(self, ifname: str, index: int) -> None:
        # The redirect goes before the IFB, so no packet is redirected to a vanishing device.
        if self._has_ingress(index):
            self._call(
                "deleting ingress qdisc",
                ifname,
                lambda: self._ipr.tc("del", index=index, handle=INGRESS_HANDLE, parent=TC_H_INGRESS),
                errno.ENOENT,
                errno.EINVAL,
            )
        self._delete_ifb(ifb_name(ifname))

    def _delete_link(self, name: str, index: int) -> None:
        self._call("deleting device", name, lambda: self._ipr.link("del", index=index), errno.ENODEV)

    def _delete_ifb(self, ifb: str) -> None:
        ifb_index = self._ifb_index(ifb)
        if ifb_index is not None:
            self._call("deleting ifb", ifb, lambda: self._ipr.link("del", index=ifb_index), errno.ENODEV)


class MemoryShaper:
    """Stand-in for tests without root: keeps the rates per interface and records the calls."""

    def __init__(self) -> None:
        self.shaped: dict[str, tuple[int, int]] = {}  # ifname -> (download, upload) kbit/s
        self.calls: list[tuple[str, str, tuple[int, int] | None]] = []

    def apply(self, ifname: str, rate: RateSpec) -> None:
        self.calls.append(("apply", ifname, (rate.download_kbit, rate.upload_kbit)))
        self.shaped[ifname] = (rate.download_kbit, rate.upload_kbit)

    def change(self, ifname: str, rate: RateSpec) -> None:
        self.calls.append(("change", ifname, (rate.download_kbit, rate.upload_kbit)))
        self.shaped[ifname] = (rate.download_kbit, rate.upload_kbit)

    def remove(self, ifname: str) -> None:
        self.calls.append(("remove", ifname, None))
        self.shaped.pop(ifname, None)

    def remove_leftovers(self) -> list[str]:
        self.calls.append(("remove_leftovers", "", None))
        return []

    def close(self) -> None:
        self.calls.append(("close", "", None))
