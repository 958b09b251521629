"""IPv4 address management: pools, static addresses, hitless reconfiguration. No kernel here."""

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
    "UnknownPoolError",
]
