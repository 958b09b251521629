"""Addresses, routes and links of session interfaces, behind one interface (`NetBackend`).

`KernelNet` talks rtnetlink through pyroute2 and needs CAP_NET_ADMIN. `MemoryNet` keeps the same
state in dictionaries for tests that cannot be root. `IfnameAllocator` hands out sstpN names.
"""

from __future__ import annotations

import errno
import heapq
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_address
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_ERROR, nlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

IFNAMSIZ = 16
IFA_F_NODAD = 0x02
IpNetwork = IPv4Network | IPv6Network
SYSCTL_IPV6 = Path("/proc/sys/net/ipv6/conf")


class NetError(Exception):
    """A kernel operation failed; the message names the interface and the operation."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    rx_dropped: int
    tx_dropped: int
    rx_errors: int
    tx_errors: int


class NetBackend(Protocol):
    def configure_p2p(self, ifname: str, local: IPv4Address, peer: IPv4Address, mtu: int) -> None: ...
    def configure_ipv6(self, ifname: str, link_local: IPv6Address, mtu: int) -> None: ...
    def add_address(self, ifname: str, address: IPv6Interface) -> None: ...
    def add_route(self, ifname: str, prefix: IpNetwork, via: IPv6Address | None = None) -> None: ...
    def remove_route(self, ifname: str, prefix: IpNetwork) -> None: ...
    def remove_interface(self, ifname: str) -> None: ...
    def interface_exists(self, ifname: str) -> bool: ...
    def link_stats(self, ifname: str) -> LinkStats: ...
    def close(self) -> None: ...


def interface_index(ifname: str) -> int | None:
    """The kernel's index of the interface named ``ifname``, None if there is none.

    One SIOCGIFINDEX ioctl: the kernel looks the name up without the RTNL lock, so this never
    waits and is safe on any thread. (pyroute2's link_lookup dumps every link and parses each,
    which cost a millisecond per session set-up with a few hundred sessions up.)"""
    try:
        return socket.if_nametoindex(ifname)
    except (OSError, ValueError):
        return None


class RtnlRequests:
    """Plain rtnetlink requests on a socket of our own: pyroute2 encodes each message, we send it
    and read the kernel's acknowledgement.

    pyroute2's synchronous IPRoute runs a private asyncio loop for every call, which cost about
    0.4 ms of CPU per request; one send and one recv cost a quarter of that. Blocking: used from
    the netlink worker thread (vpnd.net.threaded), never from the event loop."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                     socket.NETLINK_ROUTE)
        self._socket.bind((0, 0))
        self._sequence = 0

    def request(self, message: nlmsg, kind: int, flags: int = 0) -> None:
        """Send one request and wait for its acknowledgement; a refusal raises pyroute2's
        NetlinkError carrying the errno, as IPRoute's calls do."""
        self._sequence += 1
        header = message["header"]
        header["type"], header["sequence_number"] = kind, self._sequence
        header["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
        message.encode()
        self._socket.send(message.data)
        while True:
            answer = self._socket.recv(_ACK_BUFFER)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(answer):
                length, answer_kind, _flags, sequence, _pid = _NLMSG_HEADER.unpack_from(answer, offset)
                if answer_kind == NLMSG_ERROR and sequence == self._sequence:
                    code = -_NLMSG_ERRNO.unpack_from(answer, offset + _NLMSG_HEADER.size)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                    return
                offset += max(length, _NLMSG_HEADER.size)

    def close(self) -> None:
        self._socket.close()


_NLMSG_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_NLMSG_ERRNO = struct.Struct("=i")  # struct nlmsgerr starts with the (negative) errno
_ACK_BUFFER = 65536
IFF_UP = 0x1


def _netlink_errno(error: Exception) -> int | None:
    code = getattr(error, "code", None)
    return code if isinstance(code, int) else None


def host_addresses() -> list[IPv4Address | IPv6Address]:
    """The addresses clients may dial this host at: every address on its interfaces except
    loopback, link-local and multicast ones (one netlink dump)."""
    found: list[IPv4Address | IPv6Address] = []
    with IPRoute() as ipr:
        for message in ipr.get_addr():
            text = message.get_attr("IFA_ADDRESS")
            if not text:
                continue
            address = ip_address(text.split("%", 1)[0])
            if not (address.is_loopback or address.is_link_local or address.is_multicast
                    or address.is_unspecified) and address not in found:
                found.append(address)
    return found


class KernelNet:
    """The real thing, in the caller's network namespace: a session link's address and state go
    through `RtnlRequests` (the set-up path), routes, deletions and statistics through pyroute2's
    IPRoute.

    Calls block for netlink round trips, longer while another task holds the RTNL lock; the
    daemon makes them on its netlink worker thread (vpnd.net.threaded).
    """

    def __init__(self) -> None:
        self._ipr: Any = IPRoute()
        self._rtnl = RtnlRequests()

    def _index(self, ifname: str) -> int:
        index = interface_index(ifname)
        if index is None:
            raise NetError(f"interface {ifname} does not exist")
        return index

    def _call(self, what: str, ifname: str, action: Callable[[], object], *tolerated: int) -> None:
        try:
            action()
        except Exception as error:
            code = _netlink_errno(error)
            if code is not None and code in tolerated:
                return
            if code is None:
                raise
            raise NetError(f"{what} on {ifname} failed: {error}") from error

    def configure_p2p(self, ifname: str, local: IPv4Address, peer: IPv4Address, mtu: int) -> None:
        """`ip addr add LOCAL peer PEER/32 dev IFNAME; ip link set IFNAME mtu MTU up`.

        The kernel adds the host route to the peer with the address. Running it twice is fine.
        """
        index = self._index(ifname)
        address = ifaddrmsg()
        address["family"], address["prefixlen"], address["index"] = socket.AF_INET, 32, index
        address["attrs"] = [("IFA_LOCAL", str(local)), ("IFA_ADDRESS", str(peer))]
        self._call(
            "adding address",
            ifname,
            lambda: self._rtnl.request(address, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL),
            errno.EEXIST,
        )
        self._set_up(ifname, index, mtu)

    def _set_up(self, ifname: str, index: int, mtu: int) -> None:
        """`ip link set IFNAME mtu MTU up`."""
        link = ifinfmsg()
        link["index"], link["flags"], link["change"] = index, IFF_UP, IFF_UP
        link["attrs"] = [("IFLA_MTU", mtu)]
        self._call("setting mtu and up", ifname, lambda: self._rtnl.request(link, RTM_NEWLINK))

    def configure_ipv6(self, ifname: str, link_local: IPv6Address, mtu: int) -> None:
        """IPv6 on a session link: our link-local address fe80::ID/64 and nothing the kernel makes
        up by itself. vpnd answers router solicitations and DHCPv6 on the link (and the client
        reads the RAs) in userspace, so the kernel must neither invent a link-local address nor
        act on advertisements; a TUN is NOARP, so there is no duplicate address detection."""
        index = self._index(ifname)
        for name, value in (("addr_gen_mode", "1"), ("accept_ra", "0"), ("disable_ipv6", "0")):
            try:
                (SYSCTL_IPV6 / ifname / name).write_text(value)
            except OSError as error:
                raise NetError(f"setting {name} on {ifname} failed: {error.strerror or error}") from error
        self.add_address(ifname, IPv6Interface(f"{link_local}/64"))
        self._set_up(ifname, index, mtu)

    def add_address(self, ifname: str, address: IPv6Interface) -> None:
        """`ip -6 addr add ADDRESS dev IFNAME nodad`; running it twice is fine."""
        index = self._index(ifname)
        self._call(
            "adding address", ifname,
            lambda: self._ipr.addr("add", index=index, address=str(address.ip),
                                   prefixlen=address.network.prefixlen, flags=IFA_F_NODAD),
            errno.EEXIST,
        )

    def add_route(self, ifname: str, prefix: IpNetwork, via: IPv6Address | None = None) -> None:
        """Route `prefix` into the interface (a framed route behind the client, a client's IPv6
        prefix, or, ``via`` its link-local address, a delegated prefix); replaces any route to
        the same prefix."""
        index = self._index(ifname)
        extra = {"gateway": str(via)} if via is not None else {}
        self._call("adding route", ifname,
                   lambda: self._ipr.route("replace", dst=str(prefix), oif=index, **extra))

    def remove_route(self, ifname: str, prefix: IpNetwork) -> None:
        index = self._index(ifname)
        self._call(
            "removing route",
            ifname,
            lambda: self._ipr.route("del", dst=str(prefix), oif=index),
            errno.ESRCH,
            errno.ENOENT,
        )

    def remove_interface(self, ifname: str) -> None:
        """Delete the interface if it exists (a TUN whose fd is closed is already gone)."""
        index = interface_index(ifname)
        if index is None:
            return
        self._call("deleting interface", ifname, lambda: self._ipr.link("del", index=index), errno.ENODEV)

    def interface_exists(self, ifname: str) -> bool:
        return interface_index(ifname) is not None

    def link_stats(self, ifname: str) -> LinkStats:
        index = self._index(ifname)
        link = self._ipr.get_links(index)[0]
        stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
        return LinkStats(
            rx_packets=stats.get("rx_packets", 0),
            tx_packets=stats.get("tx_packets", 0),
            rx_bytes=stats.get("rx_bytes", 0),
            tx_bytes=stats.get("tx_bytes", 0),
            rx_dropped=stats.get("rx_dropped", 0),
            tx_dropped=stats.get("tx_dropped", 0),
            rx_errors=stats.get("rx_errors", 0),
            tx_errors=stats.get("tx_errors", 0),
        )

    def close(self) -> None:
        self._ipr.close()
        self._rtnl.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class MemoryInterface:
    mtu: int = 1500
    up: bool = False
    addresses: set[tuple[IPv4Address, IPv4Address]] = field(default_factory=set)  # (local, peer)
    addresses6: set[IPv6Interface] = field(default_factory=set)
    routes: set[IpNetwork] = field(default_factory=set)
    gateways: dict[IpNetwork, IPv6Address] = field(default_factory=dict)  # routes with a next hop
    stats: LinkStats = field(default_factory=lambda: LinkStats(0, 0, 0, 0, 0, 0, 0, 0))


class MemoryNet:
    """In-memory stand-in for KernelNet, for tests that cannot be root: no kernel is touched.

    Interfaces exist once a test calls `create_interface` (what opening a TUN does in the
    kernel). Every call is appended to `calls` as (method name, arguments) so tests can assert
    what the session asked of the kernel; the state is kept in `interfaces` with the same rules
    KernelNet follows (unknown interface -> NetError, repeated configure is harmless).
    """

    def __init__(self) -> None:
        self.interfaces: dict[str, MemoryInterface] = {}
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def create_interface(self, ifname: str, mtu: int = 1500) -> None:
        self.calls.append(("create_interface", (ifname, mtu)))
        self.interfaces.setdefault(ifname, MemoryInterface(mtu=mtu))

    def _get(self, ifname: str) -> MemoryInterface:
        try:
            return self.interfaces[ifname]
        except KeyError:
            raise NetError(f"interface {ifname} does not exist") from None

    def configure_p2p(self, ifname: str, local: IPv4Address, peer: IPv4Address, mtu: int) -> None:
        self.calls.append(("configure_p2p", (ifname, local, peer, mtu)))
        interface = self._get(ifname)
        interface.addresses.add((local, peer))
        interface.routes.add(IPv4Network(peer))
        interface.mtu = mtu
        interface.up = True

    def configure_ipv6(self, ifname: str, link_local: IPv6Address, mtu: int) -> None:
        self.calls.append(("configure_ipv6", (ifname, link_local, mtu)))
        interface = self._get(ifname)
        interface.addresses6.add(IPv6Interface(f"{link_local}/64"))
        interface.mtu = mtu
        interface.up = True

    def add_address(self, ifname: str, address: IPv6Interface) -> None:
        self.calls.append(("add_address", (ifname, address)))
        self._get(ifname).addresses6.add(address)

    def add_route(self, ifname: str, prefix: IpNetwork, via: IPv6Address | None = None) -> None:
        self.calls.append(("add_route", (ifname, prefix) if via is None else (ifname, prefix, via)))
        for other in self.interfaces.values():
            other.routes.discard(prefix)
            other.gateways.pop(prefix, None)
        interface = self._get(ifname)
        interface.routes.add(prefix)
        if via is not None:
            interface.gateways[prefix] = via

    def remove_route(self, ifname: str, prefix: IpNetwork) -> None:
        self.calls.append(("remove_route", (ifname, prefix)))
        interface = self._get(ifname)
        interface.routes.discard(prefix)
        interface.gateways.pop(prefix, None)

    def remove_interface(self, ifname: str) -> None:
        self.calls.append(("remove_interface", (ifname,)))
        self.interfaces.pop(ifname, None)

    def interface_exists(self, ifname: str) -> bool:
        return ifname in self.interfaces

    def link_stats(self, ifname: str) -> LinkStats:
        return self._get(ifname).stats

    def close(self) -> None:
        self.calls.append(("close", ()))


class IfnameAllocator:
    """Hands out interface names prefix0, prefix1, ...: always the lowest free number.

    Freed numbers are reused. With `exists` (e.g. KernelNet.interface_exists), a name that is
    already present in the kernel (a stale interface another process left behind) is skipped,
    and tried again on the next allocation in case it has gone meanwhile.
    """

    def __init__(self, prefix: str = "sstp", exists: Callable[[str], bool] | None = None) -> None:
        if not prefix or len(prefix) >= IFNAMSIZ - 1:
            raise ValueError(f"interface name prefix {prefix!r} leaves no room for a number")
        self.prefix = prefix
        self._exists = exists
        self._held: set[int] = set()
        self._free: list[int] = []  # heap of numbers below _next that are not held
        self._next = 0

    def allocate(self) -> str:
        skipped: list[int] = []
        try:
            while True:
                number = heapq.heappop(self._free) if self._free else self._next
                if number == self._next:
                    self._next += 1
                name = f"{self.prefix}{number}"
                if len(name) >= IFNAMSIZ:
                    skipped.append(number)
                    raise NetError(f"no interface name left for prefix {self.prefix!r}")
                if self._exists is not None and self._exists(name):
                    skipped.append(number)
                    continue
                self._held.add(number)
                return name
        finally:
            for number in skipped:
                heapq.heappush(self._free, number)

    def release(self, name: str) -> None:
        """Give a name back; releasing a name that is not held does nothing."""
        if not name.startswith(self.prefix):
            return
        digits = name[len(self.prefix) :]
        if not digits.isdigit() or str(int(digits)) != digits:
            return
        number = int(digits)
        if number in self._held:
            self._held.remove(number)
            heapq.heappush(self._free, number)

    def held(self) -> set[str]:
        return {f"{self.prefix}{number}" for number in self._held}
