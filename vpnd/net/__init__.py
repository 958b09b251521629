"""The kernel side: TUN devices, addresses, routes. In-memory stand-ins for tests without root."""

from vpnd.net.link import (
    IfnameAllocator,
    KernelNet,
    LinkStats,
    MemoryInterface,
    MemoryNet,
    NetBackend,
    NetError,
)
from vpnd.net.tun import TunDevice, open_memory_tun, open_tun, set_mtu

__all__ = [
    "IfnameAllocator",
    "KernelNet",
    "LinkStats",
    "MemoryInterface",
    "MemoryNet",
    "NetBackend",
    "NetError",
    "TunDevice",
    "open_memory_tun",
    "open_tun",
    "set_mtu",
]
