"""vpnd: an SSTP VPN concentrator with a userspace PPP stack."""

__version__ = "0.1.0"
