"""The SSTP client (`vpnd client`, `interfaces sstpc`): dial, authenticate, carry IP over a TUN."""

from vpnd.client.connection import ClientConnection, ClientNet, ClientOptions, DialError, Outcome
from vpnd.client.runner import Backoff, ClientRunner, build_options, options_from_interface
from vpnd.client.tls import ClientTlsError, ClientTlsOptions, describe_tls_failure

__all__ = [
    "Backoff",
    "ClientConnection",
    "ClientNet",
    "ClientOptions",
    "ClientRunner",
    "ClientTlsError",
    "ClientTlsOptions",
    "DialError",
    "Outcome",
    "build_options",
    "describe_tls_failure",
    "options_from_interface",
]
