"""Run a kernel backend on one worker thread of its own.

pyroute2's synchronous IPRoute drives a private asyncio loop with ``run_until_complete``, which
cannot happen on a thread whose loop is already running (the daemon's). All netlink calls are
therefore made on one dedicated thread, in order; callers wait for each result.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from typing import TypeVar

from vpnd.net.link import IpNetwork, KernelNet, LinkStats, NetBackend

T = TypeVar("T")


class ThreadedNet:
    """A ``NetBackend`` whose calls run on its own thread (default: a ``KernelNet``)."""

    def __init__(self, factory: Callable[[], NetBackend] = KernelNet) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpnd-net")
        self._backend: NetBackend = self._executor.submit(factory).result()

    def _call(self, function: Callable[..., T], *args: object) -> T:
        return self._executor.submit(function, *args).result()

    def run(self, function: Callable[..., T], *args: object) -> T:
        """Run any other netlink work (the tc shaper) on the same thread, in order."""
        return self._call(function, *args)

    def configure_p2p(self, ifname: str, local: IPv4Address, peer: IPv4Address, mtu: int) -> None:
        self._call(self._backend.configure_p2p, ifname, local, peer, mtu)

    def configure_ipv6(self, ifname: str, link_local: IPv6Address, mtu: int) -> None:
        self._call(self._backend.configure_ipv6, ifname, link_local, mtu)

    def add_address(self, ifname: str, address: IPv6Interface) -> None:
        self._call(self._backend.add_address, ifname, address)

    def add_route(self, ifname: str, prefix: IpNetwork, via: IPv6Address | None = None) -> None:
        self._call(self._backend.add_route, ifname, prefix, via)

    def remove_route(self, ifname: str, prefix: IpNetwork) -> None:
        self._call(self._backend.remove_route, ifname, prefix)

    def remove_interface(self, ifname: str) -> None:
        self._call(self._backend.remove_interface, ifname)

    def interface_exists(self, ifname: str) -> bool:
        # A name lookup, not netlink (see interface_index): answered on the caller's thread,
        # without a round trip through the worker for every interface name handed out.
        return self._backend.interface_exists(ifname)

    def link_stats(self, ifname: str) -> LinkStats:
        return self._call(self._backend.link_stats, ifname)

    def close(self) -> None:
        self._call(self._backend.close)
        self._executor.shutdown(wait=True)
