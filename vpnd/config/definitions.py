"""The typed configuration model: one tree for syntax, help, defaults and value checks.

Field names are the VyOS node names with `-` mangled to `_`; the CLI uses the hyphenated
aliases. Node kinds follow from the types (see `vpnd.config.nodes`):
bool → valueless leaf, list → multi-value leaf, dict → tag node, model → node, else leaf.
Cross-field rules live in `vpnd.config.verify`, not here, so that one step reports them all.
"""

import base64
import binascii
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, IPvAnyAddress, SecretStr, StringConstraints

from vpnd.config.fields import Fmt, cli

# The server's own address on client links when `gateway-address` is not set (VyOS only warns about
# a missing one): RFC 7600's IPv4 dummy address, which is meant for a host with no other address.
DEFAULT_GATEWAY = IPv4Address("192.0.0.8")

# --- value types ---------------------------------------------------------------------------

_NAME_RE = r"^[-_a-zA-Z0-9][\w\-.+]*$"


def _ascii_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().isascii():
        raise ValueError("must be ASCII")
    return value


def _base64_body(text: str) -> None:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not valid base64 (the PEM body without header lines)") from None
    if not text:
        raise ValueError("empty")


def _check_base64(text: str) -> str:
    _base64_body(text)
    return text


def _check_base64_secret(value: SecretStr) -> SecretStr:
    _base64_body(value.get_secret_value())
    return value


def range_bounds(text: str) -> tuple[int, int]:
    """First and last address (as integers) of a canonical pool range string."""
    if "-" in text:
        first, last = text.split("-", 1)
        return int(IPv4Address(first)), int(IPv4Address(last))
    if "/" in text:
        net = range_network(text)
        return int(net.network_address), int(net.broadcast_address)
    return int(IPv4Address(text)), int(IPv4Address(text))


def range_network(text: str) -> IPv4Network:
    """The network of a prefix range, also when written in host form (`198.51.100.1/24`, as
    VyOS's `ipv4-host` validator and accel-ppp accept): the pool is the whole network."""
    return IPv4Network(text, strict=False)


def _canonical_range(text: str) -> str:
    try:
        if "-" in text:
            first_text, last_text = text.split("-", 1)
            first, last = IPv4Address(first_text), IPv4Address(last_text)
            if last < first:
                raise ValueError(f"range {text} ends before it starts")
            if int(first) >> 8 != int(last) >> 8:
                raise ValueError(f"range {text} must lie within one /24")
            return f"{first}-{last}"
        if "/" in text:
            # Host form is kept as written (canonical spelling) so that verify can warn about it.
            return str(IPv4Interface(text))
        return str(IPv4Address(text))
    except ValueError as exc:
        # ipaddress explains ("has host bits set", "Octet 300 > 255"); keep its reason.
        raise ValueError(str(exc)) from None


def _canonical_prefix(text: str) -> str:
    try:
        return str(ip_network(text, strict=True))  # a bare address is its own /32 or /128
    except ValueError as exc:
        raise ValueError(str(exc)) from None


def _hex_digest(size: int) -> AfterValidator:
    """Hex of a `size`-byte digest, as printed by sha256sum or (with colons) openssl -fingerprint."""

    def check(text: str) -> str:
        digits = text.replace(":", "").lower()
        if len(digits) != 2 * size or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError(f"must be {2 * size} hexadecimal digits (colons allowed)")
        return digits

    return AfterValidator(check)


PoolName = Annotated[str, StringConstraints(pattern=_NAME_RE, max_length=64), Fmt("pool name")]
PkiName = Annotated[str, StringConstraints(pattern=_NAME_RE, max_length=64), Fmt("PKI object name")]
UserName = Annotated[str, StringConstraints(pattern=r"^\S+$", max_length=128), Fmt("user name")]
InterfaceName = Annotated[str, StringConstraints(pattern=r"^sstpc[0-9]+$"), Fmt("interface name sstpcN")]
HostName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9]([-.A-Za-z0-9]*[A-Za-z0-9])?$", max_length=253),
    Fmt("host name"),
]
Port = Annotated[int, Field(ge=1, le=65535), Fmt("port number")]
Description = Annotated[str, StringConstraints(max_length=255), Fmt("description (up to 255 characters)")]
AbsolutePath = Annotated[str, StringConstraints(pattern=r"^/.+$"), Fmt("absolute file path")]
AsciiSecret = Annotated[
    SecretStr, Field(min_length=1, max_length=128), AfterValidator(_ascii_secret),
    Fmt("secret (1-128 ASCII characters)"),
]
Password = Annotated[SecretStr, Field(min_length=1, max_length=128), Fmt("password")]
Base64Der = Annotated[str, AfterValidator(_check_base64), Fmt("base64 DER (PEM body)")]
Base64Secret = Annotated[SecretStr, AfterValidator(_check_base64_secret), Fmt("base64 DER (PEM body)")]
Ipv4Range = Annotated[
    str, AfterValidator(_canonical_range), Fmt("IPv4 prefix, address or range a.b.c.d-a.b.c.e"),
]
IpPrefix = Annotated[
    str, AfterValidator(_canonical_prefix), Fmt("IPv4 or IPv6 prefix or address"),
]
Sha256Hex = Annotated[str, _hex_digest(32), Fmt("SHA-256 hash (64 hex digits)")]
Sha1Hex = Annotated[str, _hex_digest(20), Fmt("SHA-1 hash (40 hex digits)")]
ConnectionLimit = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+/(sec|min)$"), Fmt("rate N/sec or N/min"),
]
InterfaceId = Annotated[
    str,
    StringConstraints(pattern=r"^(random|[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){3})$"),
    Fmt("random or x:x:x:x"),
]
PeerInterfaceId = Annotated[
    str,
    StringConstraints(
        pattern=r"^(random|calling-sid|ipv4-addr|[0-9a-fA-F]{1,4}(:[0-9a-fA-F]{1,4}){3})$",
    ),
    Fmt("random, calling-sid, ipv4-addr or x:x:x:x"),
]
HttpError = Annotated[
    str, StringConstraints(pattern=r"^(allow|deny|https?://[!-~]+)$"),
    Fmt("allow, deny or a redirect URL (http:// or https://)"),
]
Ciphers = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9:+!@=_-]+$"), Fmt("OpenSSL cipher list"),
]
AuthProtocol = Literal["pap", "chap", "mschap", "mschap-v2", "eap"]
Allowance = Literal["deny", "allow", "prefer", "require"]

# The default keeps VyOS's list; EAP is offered only when the operator adds it.
ALL_AUTH_PROTOCOLS: list[AuthProtocol] = ["pap", "chap", "mschap", "mschap-v2"]


class Base(BaseModel):
    model_config = ConfigDict(
        alias_generator=lambda name: name.replace("_", "-"),
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )


# --- vpn sstp authentication -----------------------------------------------------------------


class UserRateLimit(Base):
    upload: int | None = cli(None, "Upload bandwidth limit in kbit/s", ge=1, le=10_000_000)
    download: int | None = cli(None, "Download bandwidth limit in kbit/s", ge=1, le=10_000_000)


class LocalUser(Base):
    password: Password | None = cli(None, "Password used for authentication")
    disable: bool = cli(False, "Disable this user (keeps the entry)")
    static_ip: IPv4Address | None = cli(None, "Static client IPv4 address")
    rate_limit: UserRateLimit | None = cli(None, "Per-user bandwidth limit")


class LocalUsers(Base):
    username: dict[UserName, LocalUser] = cli(default_factory=dict, help="User name")


class RadiusServer(Base):
    key: AsciiSecret | None = cli(None, "Shared secret with the RADIUS server")
    port: Port = cli(1812, "Authentication port")
    acct_port: Port = cli(1813, "Accounting port")
    disable_accounting: bool = cli(False, "Do not send accounting to this server")
    fail_time: int = cli(0, "Seconds to mark an unresponsive server unavailable", ge=0, le=600)
    priority: int | None = cli(None, "Server priority (weight)", ge=1, le=255)
    backup: bool = cli(False, "Use this server only when all others failed")
    disable: bool = cli(False, "Temporarily disable this server")
    accept_unsigned_replies: bool = cli(
        False, "Accept replies without Message-Authenticator (servers before the BlastRADIUS fixes; "
        "weakens protection against forged replies)")


class DynamicAuthor(Base):
    server: IPv4Address | None = cli(None, "Address to listen on for Disconnect/CoA requests")
    port: Port = cli(1700, "Port to listen on for Disconnect/CoA requests")
    key: AsciiSecret | None = cli(None, "Shared secret with the Disconnect/CoA client")


class RadiusRateLimit(Base):
    attribute: str = cli("Filter-Id", "RADIUS attribute carrying the rate limit", min_length=1)
    vendor: str | None = cli(None, "Vendor dictionary of the attribute", min_length=1)
    enable: bool = cli(False, "Apply rate limits received from RADIUS")
    multiplier: float = cli(1.0, "Multiply received rate limits by this factor", ge=0.001, le=1000)


class Radius(Base):
    server: dict[IPv4Address, RadiusServer] = cli(default_factory=dict, help="RADIUS server")
    source_address: IPv4Address | None = cli(None, "Source address of RADIUS requests")
    timeout: int = cli(3, "Seconds to wait for an answer", ge=1, le=60)
    acct_timeout: int = cli(3, "Seconds an Interim-Update may go unanswered before the session ends "
                            "(0 = keep the session)", ge=0, le=60)
    max_try: int = cli(3, "Attempts per request", ge=1, le=20)
    nas_identifier: str | None = cli(None, "NAS-Identifier attribute", min_length=1, max_length=253)
    nas_ip_address: IPv4Address | None = cli(None, "NAS-IP-Address attribute")
    accounting_interim_interval: int | None = cli(None, "Seconds between Interim-Update", ge=1, le=3600)
    acct_interim_jitter: int | None = cli(None, "Random jitter of Interim-Update in seconds", ge=1, le=60)
    dynamic_author: DynamicAuthor | None = cli(None, "Dynamic authorization (RFC 5176 Disconnect/CoA)")
    rate_limit: RadiusRateLimit | None = cli(None, "Rate limits from RADIUS attributes")


class EapTls(Base):
    ca_certificate: PkiName | None = cli(None, "CA that issues the client certificates (PKI name)",
                                         completion="pki ca")
    crl_file: AbsolutePath | None = cli(None, "Certificate revocation list of that CA (PEM file)")
    username: Literal["common-name", "email", "upn"] = cli(
        "common-name", "Certificate field that names the user (subject CN, SAN e-mail or SAN UPN)")


class Authentication(Base):
    mode: Literal["local", "radius", "noauth"] = cli("local", "Authentication backend")
    protocols: list[AuthProtocol] = cli(
        default_factory=lambda: list(ALL_AUTH_PROTOCOLS), help="Accepted PPP authentication protocols "
        "(eap: EAP with EAP-MSCHAPv2, offered first and left for the next one when the client Naks it)",
    )
    local_users: LocalUsers = cli(default_factory=LocalUsers, help="Local user accounts")
    eap_tls: EapTls | None = cli(None, "Local EAP-TLS: users log in with client certificates")
    radius: Radius = cli(default_factory=Radius, help="RADIUS authentication and accounting")


# --- pools --------------------------------------------------------------------------------------


class IpPool(Base):
    range: list[Ipv4Range] = cli(default_factory=list, help="Addresses of this pool")
    next_pool: PoolName | None = cli(None, "Pool used when this one is exhausted",
                                     completion="vpn sstp client-ip-pool")


class Ipv6Prefix(Base):
    mask: int = cli(64, "Prefix length handed to each client", ge=48, le=128)


class Ipv6Delegate(Base):
    delegation_prefix: int | None = cli(None, "Prefix length delegated to each client", ge=32, le=64)


class Ipv6Pool(Base):
    prefix: dict[IPv6Network, Ipv6Prefix] = cli(default_factory=dict, help="Prefix for client addresses")
    delegate: dict[IPv6Network, Ipv6Delegate] = cli(
        default_factory=dict, help="Prefix for prefix delegation (DHCPv6-PD)",
    )


class LegacyIpPool(Base):
    """`client-ip-pool subnet X` before VyOS migration 4→5 (accepted and migrated)."""

    subnet: list[IPv4Network] = cli(default_factory=list, help="Client subnet (old syntax)")


# --- other server nodes -----------------------------------------------------------------------


class Limits(Base):
    connection_limit: ConnectionLimit | None = cli(None, "Maximum connection rate per client address")
    burst: int | None = cli(
        None, "Connections a client address may open at once (default: the count of connection-limit)",
        ge=1, le=65535)
    timeout: int | None = cli(None, "Seconds a client address over connection-limit is refused (default 60)",
                              ge=1, le=86400)
    negotiation_timeout: int = cli(
        60, "Seconds each negotiation phase may take (TLS and HTTP request, SSTP call, PPP link and "
        "authentication, IP negotiation)", ge=5, le=600)
    authentication_failure_delay: int = cli(
        30, "Longest wait in seconds before a login attempt is looked at after recent failures of its "
        "user name from its address, of its user name from many addresses, or of many user names from "
        "its address: 1 s after the first failure, doubling per failure up to this (0 = no throttle)",
        ge=0, le=300)
    authentication_failure_window: int = cli(
        600, "Seconds a failed login is remembered: the failures of a user name from an address are "
        "forgotten this long after the last of them", ge=10, le=86400)
    authentication_spraying_threshold: int = cli(
        20, "Distinct user names that may fail from one client address within "
        "authentication-failure-window before logins of other names from that address wait "
        "(password spraying; 0 = no spraying check)", ge=0, le=10000)
    authentication_trusted_time: int = cli(
        604800, "Seconds after a successful login during which that user name, from that address, does "
        "not wait for other addresses' or other names' failures (0 = never)", ge=0, le=7776000)
    single_session: Literal["deny", "replace"] | None = cli(
        None, "One session per user name: refuse a second login (deny) or end the old session (replace)")


class Log(Base):
    level: int = cli(3, "Log level: 0 off, 1 error, 2 warning, 3 info, 4 debug, 5 full", ge=0, le=5)


class Prometheus(Base):
    """Metrics for Prometheus, served over plain HTTP at /metrics (no authentication: keep it on a
    management address)."""

    listen_address: Annotated[IPvAnyAddress, Fmt("IPv4 or IPv6 address")] = cli(
        IPv4Address("127.0.0.1"), "Address to serve metrics on")
    port: Port = cli(9101, "TCP port to serve metrics on")


class ServerSsl(Base):
    certificate: PkiName | None = cli(None, "Server certificate (PKI name)", completion="pki certificate")
    ca_certificate: PkiName | None = cli(None, "CA certificate (PKI name)", completion="pki ca")
    intermediate_certificate: list[PkiName] = cli(
        default_factory=list, help="Intermediate CA certificates served with the server certificate",
        completion="pki ca",
    )
    cert_file: AbsolutePath | None = cli(None, "Server certificate file (PEM)")
    key_file: AbsolutePath | None = cli(None, "Server private key file (PEM, unencrypted)")
    ca_cert_file: AbsolutePath | None = cli(None, "CA certificate file (PEM)")
    chain_file: AbsolutePath | None = cli(
        None, "Intermediate certificates file (PEM) served after the certificate")
    tls_version_min: Literal["1.0", "1.1", "1.2", "1.3"] = cli(
        "1.2", "Lowest TLS version accepted (1.0 and 1.1 only for old clients such as Windows 7)")
    ciphers: Ciphers | None = cli(None, "TLS 1.2 cipher list (OpenSSL syntax)")


class TlsOffload(Base):
    """TLS ends at a balancer in front of us: the listener speaks plain HTTP/SSTP."""

    certificate_hash_sha256: Sha256Hex | None = cli(
        None, "SHA-256 hash of the certificate the balancer presents to clients")
    certificate_hash_sha1: Sha1Hex | None = cli(
        None, "SHA-1 hash of the certificate the balancer presents to clients")


class PppOptions(Base):
    lcp_echo_interval: int = cli(30, "Seconds between LCP Echo-Requests", ge=1, le=3600)
    lcp_echo_failure: int = cli(3, "Unanswered LCP echoes before the link is closed", ge=1, le=100)
    lcp_echo_timeout: int = cli(0, "Adaptive LCP echo: seconds without traffic before down (0 = off)",
                                ge=0, le=3600)
    mppe: Literal["require", "prefer", "deny"] = cli("prefer", "MPPE encryption")
    ipv4: Allowance | None = cli(None, "IPv4 (IPCP) negotiation")
    ipv6: Allowance = cli("deny", "IPv6 (IPV6CP) negotiation")
    ipv6_interface_id: InterfaceId | None = cli(None, "Local IPv6 interface identifier")
    ipv6_peer_interface_id: PeerInterfaceId | None = cli(None, "Peer IPv6 interface identifier")
    ipv6_accept_peer_interface_id: bool = cli(False, "Accept the interface identifier the peer asks for")
    min_mtu: int | None = cli(None, "Smallest MTU accepted from a peer", ge=68, le=65535)
    mru: int | None = cli(None, "Maximum Receive Unit", ge=68, le=65535)
    disable_ccp: bool = cli(False, "Do not negotiate CCP (and thus MPPE)")
    interface_cache: int | None = cli(None, "Session interfaces kept for reuse", ge=1, le=256000)


class ExtendedScripts(Base):
    """Scripts run at session events with accel-ppp pppd_compat's arguments and variables."""

    on_pre_up: AbsolutePath | None = cli(
        None, "Script run before a session comes up; the session comes up only if it exits 0")
    on_up: AbsolutePath | None = cli(None, "Script run when a session is up")
    on_down: AbsolutePath | None = cli(None, "Script run when a session ends")
    on_change: AbsolutePath | None = cli(None, "Script run when a RADIUS CoA changes a session")
    timeout: int = cli(30, "Seconds a script may run before it is killed", ge=1, le=3600)


class SstpServer(Base):
    authentication: Authentication = cli(default_factory=Authentication, help="Authentication")
    client_ip_pool: dict[PoolName, IpPool] = cli(default_factory=dict, help="Pool of client IPv4 addresses")
    client_ipv6_pool: dict[PoolName, Ipv6Pool] = cli(
        default_factory=dict, help="Pool of client IPv6 prefixes")
    default_pool: PoolName | None = cli(None, "Pool used for clients without another",
                                        completion="vpn sstp client-ip-pool")
    default_ipv6_pool: PoolName | None = cli(None, "IPv6 pool used for clients without another",
                                             completion="vpn sstp client-ipv6-pool")
    gateway_address: IPv4Address | None = cli(None, "Server address on the client links")
    name_server: list[IPvAnyAddress] = cli(default_factory=list, help="DNS servers offered to clients")
    wins_server: list[IPv4Address] = cli(default_factory=list, help="WINS servers offered to clients")
    port: Port = cli(443, "TCP port to listen on")
    host_name: HostName | None = cli(
        None, "Accept only connections naming this host (TLS SNI and HTTP Host)")
    mtu: int = cli(1500, "Maximum Transmission Unit of client links", ge=68, le=1500)
    http_error: HttpError = cli(
        "allow", "Answer to requests that are not SSTP: allow (HTTP error status), deny (close without "
        "an answer) or a URL to redirect to")
    max_concurrent_sessions: int | None = cli(
        None, "Sessions allowed to be starting (not yet up) at once (0 = no limit)", ge=0, le=65535)
    limits: Limits | None = cli(None, "Connection, negotiation and authentication limits")
    log: Log = cli(default_factory=Log, help="Logging")
    description: Description | None = cli(None, "Description")
    ssl: ServerSsl | None = cli(None, "TLS certificate and settings")
    accept_proxy_protocol: bool = cli(False, "Expect a PROXY protocol (v1 or v2) header on every connection")
    proxy_protocol_source: list[IpPrefix] = cli(
        default_factory=list, help="Load balancers allowed to send a PROXY protocol header")
    tls_offload: TlsOffload | None = cli(None, "TLS is terminated by a load balancer (plain TCP listener)")
    ppp_options: PppOptions = cli(default_factory=PppOptions, help="PPP options")
    prometheus: Prometheus | None = cli(None, "Serve metrics to Prometheus (off unless set)")
    extended_scripts: ExtendedScripts | None = cli(None, "Scripts run at session events (pppd_compat)")


class Vpn(Base):
    sstp: SstpServer | None = cli(None, "Secure Socket Tunneling Protocol (SSTP) server")


# --- interfaces sstpc -------------------------------------------------------------------------


class SstpcAuthentication(Base):
    username: Annotated[str, StringConstraints(min_length=1, max_length=128), Fmt("user name")] | None = cli(
        None, "User name")
    password: AsciiSecret | None = cli(None, "Password")


class SstpcSsl(Base):
    ca_certificate: PkiName | None = cli(None, "CA certificate that signs the server (PKI name)",
                                         completion="pki ca")


class HttpProxy(Base):
    address: HostName | None = cli(None, "HTTP proxy host")
    port: Port = cli(8080, "HTTP proxy port")


class SstpcInterface(Base):
    description: Description | None = cli(None, "Description")
    disable: bool = cli(False, "Administratively disable the interface")
    authentication: SstpcAuthentication = cli(default_factory=SstpcAuthentication, help="Authentication")
    no_default_route: bool = cli(False, "Do not install a default route through the tunnel")
    default_route_distance: int = cli(210, "Distance of the default route", ge=1, le=255)
    no_peer_dns: bool = cli(False, "Ignore DNS servers offered by the server")
    mtu: int = cli(1452, "Maximum Transmission Unit", ge=68, le=1500)
    server: HostName | None = cli(None, "Remote SSTP server (host name or IPv4 address)")
    port: Port = cli(443, "Remote port")
    ssl: SstpcSsl = cli(default_factory=SstpcSsl, help="TLS settings")
    verify_server_certificate: bool = cli(True, "Check the server certificate chain", leaf=True)
    verify_server_address_from_certificate: bool = cli(
        True, "Check that the server name is in its certificate", leaf=True)
    add_sni: bool = cli(True, "Send the server name in the TLS handshake (SNI)", leaf=True)
    http_proxy: HttpProxy | None = cli(None, "Connect through an HTTP CONNECT proxy")
    keepalive_timeout: int = cli(60, "Seconds without answer before reconnecting (0 = off)", ge=0, le=3600)
    tls_version: Literal["any", "only-1.2", "only-1.3"] = cli("any", "TLS versions offered")


class Interfaces(Base):
    sstpc: dict[InterfaceName, SstpcInterface] = cli(default_factory=dict, help="SSTP client interface")


# --- pki --------------------------------------------------------------------------------------


class PkiPrivate(Base):
    key: Base64Secret | None = cli(None, "Private key (base64 DER, PKCS#8)")
    password_protected: bool = cli(False, "The private key is encrypted")


class PkiCa(Base):
    certificate: Base64Der | None = cli(None, "CA certificate (base64 DER)")
    description: Description | None = cli(None, "Description")
    private: PkiPrivate | None = cli(None, "CA private key")


class PkiCertificate(Base):
    certificate: Base64Der | None = cli(None, "Certificate (base64 DER)")
    description: Description | None = cli(None, "Description")
    private: PkiPrivate | None = cli(None, "Private key")


class Pki(Base):
    ca: dict[PkiName, PkiCa] = cli(default_factory=dict, help="Certificate authority")
    certificate: dict[PkiName, PkiCertificate] = cli(default_factory=dict, help="Certificate")


class Config(Base):
    """Root of the configuration."""

    interfaces: Interfaces = cli(default_factory=Interfaces, help="Network interfaces")
    pki: Pki = cli(default_factory=Pki, help="Public key infrastructure")
    vpn: Vpn = cli(default_factory=Vpn, help="Virtual private networks")
