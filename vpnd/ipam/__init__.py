"""Address management: IPv4 pools and IPv6 prefix pools, static addresses, hitless
reconfiguration. No kernel here."""

from vpnd.ipam.pool import (
    AddressUnavailable,
    Ipam,
    IpamError,
    Lease,
    OwnerHasLeaseError,
    PoolExhausted,
    PoolRange,
    PoolSpec,
    PoolUsage,
    UnknownPoolError,
)
from vpnd.ipam.prefix_pool import (
    PrefixIpam,
    PrefixKind,
    PrefixLease,
    PrefixPoolSpec,
    PrefixPoolUsage,
    PrefixRange,
)

__all__ = [
    "AddressUnavailable",
    "Ipam",
    "IpamError",
    "Lease",
    "OwnerHasLeaseError",
    "PoolExhausted",
    "PoolRange",
    "PoolSpec",
    "PoolUsage",
    "PrefixIpam",
    "PrefixKind",
    "PrefixLease",
    "PrefixPoolSpec",
    "PrefixPoolUsage",
    "PrefixRange",
    "UnknownPoolError",
]
