"""All cross-field rules, in one pure step: `verify(config, probe, now) -> VerifyResult`.

Every message starts with the CLI path of the object it is about, e.g.
`vpn sstp authentication local-users username alice: password is required`.
The outside world is reached only through `probe` (is a TCP port taken, read a file) and the
clock only through `now`, so tests are deterministic. Warnings are returned, never printed.
"""

import base64
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from vpnd.config.definitions import (
    DEFAULT_GATEWAY,
    Config,
    IpPool,
    PkiCa,
    PkiCertificate,
    PkiPrivate,
    ServerSsl,
    SstpcInterface,
    SstpServer,
    range_bounds,
    range_network,
)
from vpnd.config.errors import ConfigError
from vpnd.config.node import show_path
from vpnd.proto.ppp.ipv6cp import parse_interface_id

MIN_RSA_BITS = 2048
EXPIRY_WARNING = datetime.timedelta(days=30)
MAX_DNS_V4, MAX_DNS_V6, MAX_WINS = 2, 3, 2
SLAAC_PREFIX_LENGTH = 64


class Probe(Protocol):
    def port_in_use(self, port: int) -> str | None:
        """Who listens on TCP `port` (other than vpnd itself), or None when it is free."""


@dataclass
class VerifyResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)


class SystemProbe:
    """The real machine, read through /proc (no sockets in this layer)."""

    def __init__(self, ignore_programs: tuple[str, ...] = ("vpnd",), proc: str = "/proc") -> None:
        self._ignore = ignore_programs
        self._proc = Path(proc)

    def port_in_use(self, port: int) -> str | None:
        inodes = set(self._listening_inodes(port))
        if not inodes:
            return None
        owners = list(self._owners(inodes))
        if not owners:
            return "an unknown program"
        others = [o for o in owners if not any(name in o[1] for name in self._ignore)]
        if not others:
            return None  # our own daemon: a re-commit keeps its listener
        pid, _cmdline, name = others[0]
        return f"{name} (pid {pid})"

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def file_mode(self, path: str) -> int:
        """Permission bits of ``path`` (0o600 ...)."""
        return os.stat(path).st_mode & 0o7777

    def _listening_inodes(self, port: int) -> Iterator[str]:
        for table in ("net/tcp", "net/tcp6"):
            try:
                lines = (self._proc / table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    yield fields[9]

    def _owners(self, inodes: set[str]) -> Iterator[tuple[int, str, str]]:
        wanted = {f"socket:[{inode}]" for inode in inodes}
        for entry in self._proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                links = {os.readlink(fd) for fd in (entry / "fd").iterdir()}
                if links & wanted:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    name = (entry / "comm").read_text().strip()
                    yield int(entry.name), cmdline, name
            except OSError:
                continue


class _Report:
    def __init__(self) -> None:
        self.result = VerifyResult()

    def error(self, path: list[str], message: str) -> None:
        self.result.errors.append(f"{show_path(path)}: {message}")

    def warn(self, path: list[str], message: str) -> None:
        self.result.warnings.append(f"{show_path(path)}: {message}")


def verify(config: Config, probe: Probe | None = None,
           now: datetime.datetime | float | None = None) -> VerifyResult:
    """Check every cross-field rule; never raises for a bad configuration (see VerifyResult)."""
    probe = probe if probe is not None else SystemProbe()
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    elif isinstance(now, int | float):
        now = datetime.datetime.fromtimestamp(now, datetime.UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    report = _Report()
    _verify_pki(config, report)
    if config.vpn.sstp is not None:
        _Server(config, config.vpn.sstp, probe, now, report).verify()
    for name, interface in config.interfaces.sstpc.items():
        _verify_sstpc(config, name, interface, report)
    return report.result


# --- pki ----------------------------------------------------------------------------------------


def _load_der_certificate(body: str) -> x509.Certificate:
    return x509.load_der_x509_certificate(base64.b64decode(body))


def _load_der_key(private: PkiPrivate) -> Any:
    assert private.key is not None
    return serialization.load_der_private_key(base64.b64decode(private.key.get_secret_value()), None)


def _verify_pki(config: Config, report: _Report) -> None:
    entries: list[tuple[str, str, PkiCa | PkiCertificate]] = [
        *(("ca", name, entry) for name, entry in config.pki.ca.items()),
        *(("certificate", name, entry) for name, entry in config.pki.certificate.items()),
    ]
    for kind, name, entry in entries:
        path = ["pki", kind, name]
        if entry.certificate is not None:
            try:
                _load_der_certificate(entry.certificate)
            except ValueError:
                report.error([*path, "certificate"], "not a DER X.509 certificate")
        private = entry.private
        if private is not None and private.key is not None and not private.password_protected:
            try:
                _load_der_key(private)
            except (ValueError, TypeError):
                report.error([*path, "private", "key"], "not an unencrypted DER (PKCS#8) private key")


# --- vpn sstp -----------------------------------------------------------------------------------


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo))


def _certificate_names(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(name) for name in san.get_values_for_type(x509.DNSName)]
        names += [str(address) for address in san.get_values_for_type(x509.IPAddress)]
        if names:
            return names
    except x509.ExtensionNotFound:
        pass
    return [str(attr.value) for attr in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(host: str, pattern: str) -> bool:
    """RFC 6125 matching: a wildcard stands for exactly one leftmost label."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return host == pattern


class _Server:
    def __init__(self, config: Config, sstp: SstpServer, probe: Probe,
                 now: datetime.datetime, report: _Report) -> None:
        self.config, self.sstp, self.probe, self.now, self.report = config, sstp, probe, now, report
        self.base = ["vpn", "sstp"]

    def error(self, path: list[str], message: str) -> None:
        self.report.error([*self.base, *path], message)

    def warn(self, path: list[str], message: str) -> None:
        self.report.warn([*self.base, *path], message)

    def verify(self) -> None:
        self.port()
        self.authentication()
        self.ipv4_pools()
        self.static_addresses()
        self.ipv6_pools()
        self.pools_for_mode()
        self.name_servers()
        self.ppp()
        self.ipv6_interface_ids()
        self.ssl()
        self.load_balancer()
        self.limits()
        self.prometheus()
        self.extended_scripts()

    # VyOS check 1 (T4644): the port must be free, except for our own listener.
    def port(self) -> None:
        owner = self.probe.port_in_use(self.sstp.port)
        if owner:
            self.error(["port", str(self.sstp.port)], f"TCP port {self.sstp.port} is in use by {owner}")

    def authentication(self) -> None:
        auth = self.sstp.authentication
        users = auth.local_users.username
        if auth.mode == "local":
            if not users and auth.eap_tls is None:
                self.error(["authentication", "mode", "local"],
                           'local authentication requires at least one "local-users username"')
            elif users and all(user.disable for user in users.values()):
                self.warn(["authentication", "local-users"], "every local user is disabled")
        for name, user in users.items():
            path = ["authentication", "local-users", "username", name]
            if user.password is None:
                self.error(path, "password is required")
            limit = user.rate_limit
            if limit is not None and (limit.upload is None) != (limit.download is None):
                self.error([*path, "rate-limit"], "both upload and download are required")
        eap_tls = auth.eap_tls
        if eap_tls is not None:
            path = ["authentication", "eap-tls"]
            if "eap" not in auth.protocols:
                self.error(path, 'needs "eap" in authentication protocols')
            if auth.mode != "local":
                self.warn(path, f"applies to mode local only; in mode {auth.mode} it is not used")
            if eap_tls.ca_certificate is None:
                self.error(path, "ca-certificate is required")
            else:
                self._pki_ca([*path, "ca-certificate", eap_tls.ca_certificate], eap_tls.ca_certificate)
        if auth.protocols == ["eap"] and auth.mode != "noauth" and eap_tls is None:
            self.warn(["authentication", "protocols", "eap"],
                      "only clients that speak EAP-MSCHAPv2 can log in (sstpc with pppd, RouterOS and "
                      "older profiles need mschap-v2 as well)")
        radius = auth.radius
        if auth.mode == "radius":
            enabled = [address for address, server in radius.server.items() if not server.disable]
            if not enabled:
                self.error(["authentication", "radius", "server"],
                           "RADIUS authentication requires at least one enabled server")
            elif all(radius.server[address].backup for address in enabled):
                self.warn(["authentication", "radius", "server"], "every enabled server is a backup server")
        for address, server in radius.server.items():
            if server.key is None:
                self.error(["authentication", "radius", "server", str(address)], "key is required")
            if server.accept_unsigned_replies:
                self.warn(["authentication", "radius", "server", str(address), "accept-unsigned-replies"],
                          "replies without Message-Authenticator are accepted: forged Access-Accepts "
                          "(BlastRADIUS) can no longer be told apart; upgrade the server instead")
        author = radius.dynamic_author
        if author is not None:
            if author.server is not None and author.key is None:
                self.error(["authentication", "radius", "dynamic-author"],
                           "key is required when server is set")
            if author.server is None and author.key is not None:
                self.warn(["authentication", "radius", "dynamic-author"], "key is set but server is not")

    def ipv4_pools(self) -> None:
        pools = self.sstp.client_ip_pool
        for name, pool in pools.items():
            path = ["client-ip-pool", name]
            if pool.next_pool is not None and pool.next_pool not in pools:
                self.error([*path, "next-pool"], f'pool "{pool.next_pool}" does not exist')
            if not pool.range:
                self.error(path, "range is required" + (" when next-pool is set" if pool.next_pool else ""))
            for text in pool.range:
                if "/" in text and str(range_network(text)) != text:
                    self.warn([*path, "range", text], f"host form: the pool is the network "
                              f"{range_network(text)} (write that to silence this warning)")
        self._next_pool_cycles(pools)
        spans = [(range_bounds(text), name, text) for name, pool in pools.items() for text in pool.range]
        for index, ((first, last), name, text) in enumerate(spans):
            for (other_first, other_last), other_name, other_text in spans[index + 1:]:
                if first <= other_last and other_first <= last:
                    self.error(["client-ip-pool", name, "range", text],
                               f'overlaps client-ip-pool {other_name} range {other_text}')
        gateway = self.sstp.gateway_address
        if gateway is not None:
            for (first, last), name, text in spans:
                if not first <= int(gateway) <= last:
                    continue
                if "/" in text:
                    # A prefix names the client subnet, which holds the gateway (VyOS's own docs
                    # do this); the address allocator must skip it, so say so without failing.
                    self.warn(["gateway-address", str(gateway)], f"inside client-ip-pool {name} range "
                              f"{text}; it is excluded from the pool")
                else:
                    self.error(["gateway-address", str(gateway)],
                               f"inside client-ip-pool {name} range {text}")
        else:
            # VyOS only warns here (its RADIUS smoketests leave it out), so a missing gateway runs.
            self.warn(["gateway-address"], f"not set; the server uses {DEFAULT_GATEWAY} (RFC 7600's "
                      "IPv4 dummy address) as its own address on client links")
        default = self.sstp.default_pool
        if default is not None and default not in pools:
            self.error(["default-pool"], f'pool "{default}" does not exist')
        elif default is None and pools:
            self.warn(["default-pool"], "not set")

    def _next_pool_cycles(self, pools: dict[str, IpPool]) -> None:
        reported: set[frozenset[str]] = set()
        for start in pools:
            seen: list[str] = []
            name: str | None = start
            while name is not None and name in pools and name not in seen:
                seen.append(name)
                name = pools[name].next_pool
            if name is not None and name in seen:
                cycle = seen[seen.index(name):]
                if frozenset(cycle) not in reported:
                    reported.add(frozenset(cycle))
                    first = min(cycle)
                    turn = cycle.index(first)
                    ordered = [*cycle[turn:], *cycle[:turn], first]
                    self.error(["client-ip-pool", first, "next-pool"], "cycle: " + " -> ".join(ordered))

    def static_addresses(self) -> None:
        pools = self.sstp.client_ip_pool
        owners: dict[IPv4Address, str] = {}
        for name, user in self.sstp.authentication.local_users.username.items():
            address = user.static_ip
            if address is None:
                continue
            path = ["authentication", "local-users", "username", name, "static-ip", str(address)]
            inside = [pool_name for pool_name, pool in pools.items()
                      if any(lo <= int(address) <= hi for lo, hi in map(range_bounds, pool.range))]
            # Outside every pool is fine (accel-ppp hands it out too): the session gets it as a
            # routed /32, and no pool can lease it to anyone else.
            if len(inside) > 1:
                self.error(path, "inside more than one pool: " + ", ".join(inside))
            if address == self.sstp.gateway_address:
                self.error(path, "is the gateway-address")
            if address in owners:
                self.error(path, f'also the static-ip of user "{owners[address]}"')
            owners.setdefault(address, name)

    def ipv6_pools(self) -> None:
        pools = self.sstp.client_ipv6_pool
        networks: list[tuple[IPv6Network, list[str]]] = []
        for name, pool in pools.items():
            path = ["client-ipv6-pool", name]
            if not pool.prefix and not pool.delegate:
                self.error(path, "prefix or delegate is required")
            if pool.delegate and not pool.prefix:
                self.error(path, "delegate requires a prefix in the same pool")
            for prefix, options in pool.prefix.items():
                if options.mask < prefix.prefixlen:
                    self.error([*path, "prefix", str(prefix), "mask"],
                               f"{options.mask} is shorter than the prefix length {prefix.prefixlen}")
                elif options.mask != SLAAC_PREFIX_LENGTH:
                    self.warn([*path, "prefix", str(prefix), "mask"],
                              f"{options.mask}: clients form addresses from router advertisements (SLAAC) "
                              f"only for /{SLAAC_PREFIX_LENGTH} prefixes")
                networks.append((prefix, [*path, "prefix", str(prefix)]))
            for prefix, delegate in pool.delegate.items():
                dpath = [*path, "delegate", str(prefix)]
                if delegate.delegation_prefix is None:
                    self.error(dpath, "delegation-prefix is required")
                elif delegate.delegation_prefix < prefix.prefixlen:
                    self.error([*dpath, "delegation-prefix"], f"{delegate.delegation_prefix} is shorter than "
                               f"the prefix length {prefix.prefixlen}")
                networks.append((prefix, dpath))
        for index, (network, path) in enumerate(networks):
            for other, other_path in networks[index + 1:]:
                if network.overlaps(other):
                    self.error(path, "overlaps " + show_path(other_path))
        ipv6 = self.sstp.ppp_options.ipv6
        if pools and ipv6 == "deny":
            # VyOS accepts this too (its IPv6 modules simply stay unloaded): unused, not wrong.
            self.warn(["client-ipv6-pool"], 'IPv6 pools are configured but "ppp-options ipv6" is deny, '
                      "so they are unused (set it to allow, prefer or require)")
        if ipv6 != "deny" and not pools and self.sstp.authentication.mode != "radius":
            self.warn(["ppp-options", "ipv6"], f"{ipv6} but no client-ipv6-pool is configured")
        default = self.sstp.default_ipv6_pool
        if default is not None and default not in pools:
            self.error(["default-ipv6-pool"], f'pool "{default}" does not exist')
        elif default is None and pools:
            self.warn(["default-ipv6-pool"], "not set")

    def ipv6_interface_ids(self) -> None:
        options = self.sstp.ppp_options
        local, peer = options.ipv6_interface_id, options.ipv6_peer_interface_id
        fixed: dict[str, bytes] = {}
        for name, value in (("ipv6-interface-id", local), ("ipv6-peer-interface-id", peer)):
            if value is None or value in ("random", "calling-sid", "ipv4-addr"):
                continue
            try:
                fixed[name] = parse_interface_id(value)
            except ValueError as exc:
                self.error(["ppp-options", name, value], str(exc))
        if len(fixed) == 2 and fixed["ipv6-interface-id"] == fixed["ipv6-peer-interface-id"]:
            self.error(["ppp-options", "ipv6-peer-interface-id", str(peer)],
                       "the same as ipv6-interface-id: the two ends of a link need different identifiers")
        if peer == "ipv4-addr" and options.ipv4 == "deny":
            self.warn(["ppp-options", "ipv6-peer-interface-id", "ipv4-addr"], 'but "ppp-options ipv4" is '
                      "deny: without an IPv4 address the client keeps the identifier it chose")
        if options.ipv6_accept_peer_interface_id and peer is None:
            self.warn(["ppp-options", "ipv6-accept-peer-interface-id"], "has no effect without "
                      "ipv6-peer-interface-id (the client's own identifier is taken anyway)")
        if options.ipv6 == "deny":
            unused = [name for name, value in (
                ("ipv6-interface-id", local), ("ipv6-peer-interface-id", peer),
                ("ipv6-accept-peer-interface-id", options.ipv6_accept_peer_interface_id or None),
            ) if value is not None]
            if unused:
                self.warn(["ppp-options", "ipv6"], "deny, so these are unused: " + ", ".join(unused))

    def pools_for_mode(self) -> None:
        mode = self.sstp.authentication.mode
        if mode in ("local", "noauth") and not self.sstp.client_ip_pool and not self.sstp.client_ipv6_pool:
            self.error(["authentication", "mode", mode],
                       f"{mode} authentication requires a client-ip-pool or client-ipv6-pool")

    def name_servers(self) -> None:
        v4 = [a for a in self.sstp.name_server if isinstance(a, IPv4Address)]
        v6 = [a for a in self.sstp.name_server if isinstance(a, IPv6Address)]
        if len(v4) > MAX_DNS_V4:
            self.error(["name-server"], f"at most {MAX_DNS_V4} IPv4 name servers, not {len(v4)}")
        if len(v6) > MAX_DNS_V6:
            self.error(["name-server"], f"at most {MAX_DNS_V6} IPv6 name servers, not {len(v6)}")
        if len(self.sstp.wins_server) > MAX_WINS:
            self.error(["wins-server"], f"at most {MAX_WINS} WINS servers, not {len(self.sstp.wins_server)}")

    def ppp(self) -> None:
        options = self.sstp.ppp_options
        if options.mppe == "require":
            if options.disable_ccp:
                self.error(["ppp-options", "mppe"], "require needs CCP, but disable-ccp is set")
            if not {"mschap", "mschap-v2", "eap"} & set(self.sstp.authentication.protocols):
                self.error(["ppp-options", "mppe"],
                           "require needs mschap, mschap-v2 or eap in authentication protocols (MPPE keys)")
            self.warn(["ppp-options", "mppe"],
                      "require refuses Windows SSTP clients: they do not negotiate CCP/MPPE over SSTP "
                      "(the TLS tunnel already encrypts)")
        if options.ipv4 == "deny" and self.sstp.client_ip_pool:
            self.warn(["ppp-options", "ipv4"], "deny, so client-ip-pool is unused")

    # --- behind a load balancer ----------------------------------------------------------

    def load_balancer(self) -> None:
        sstp = self.sstp
        if sstp.accept_proxy_protocol and not sstp.proxy_protocol_source:
            self.error(["accept-proxy-protocol"], "requires at least one proxy-protocol-source (the "
                       "balancers allowed to send the header; anyone else could forge client addresses)")
        if sstp.proxy_protocol_source and not sstp.accept_proxy_protocol:
            self.warn(["proxy-protocol-source"], "set but accept-proxy-protocol is not, so it is unused")
        offload = sstp.tls_offload
        if offload is not None and offload.certificate_hash_sha256 is None \
                and offload.certificate_hash_sha1 is None:
            self.error(["tls-offload"], "certificate-hash-sha256 or certificate-hash-sha1 is required: the "
                       "crypto binding must check the certificate the balancer presents")
        elif offload is not None and offload.certificate_hash_sha256 is None:
            self.warn(["tls-offload", "certificate-hash-sha1"], "only SHA-1: clients that insist on "
                      "SHA-256 (Windows prefers it) fall back to SHA-1 binding")

    # --- extended-scripts (VyOS's "script" validator: an executable file) ------------------

    def extended_scripts(self) -> None:
        scripts = self.sstp.extended_scripts
        if scripts is None:
            return
        mode_of = getattr(self.probe, "file_mode", None)
        for name in ("on-pre-up", "on-up", "on-down", "on-change"):
            path = getattr(scripts, name.replace("-", "_"))
            if path is None:
                continue
            try:
                mode = mode_of(path) if mode_of is not None else os.stat(path).st_mode & 0o7777
            except OSError as error:
                self.error(["extended-scripts", name, path], f"cannot use it: {error.strerror or error}")
                continue
            if not mode & 0o111:
                self.error(["extended-scripts", name, path], f"not executable (mode {mode:04o}); "
                           f"chmod +x {path}")

    # --- limits ----------------------------------------------------------------------------

    def limits(self) -> None:
        limits = self.sstp.limits
        if limits is None:
            return
        if limits.connection_limit is None:
            for name in ("burst", "timeout"):
                if getattr(limits, name) is not None:
                    self.warn(["limits", name], "set but connection-limit is not, so it is unused")
        if limits.authentication_failure_delay >= limits.negotiation_timeout:
            self.warn(["limits", "authentication-failure-delay"],
                      f"{limits.authentication_failure_delay} s is not shorter than negotiation-timeout "
                      f"{limits.negotiation_timeout} s: throttled attempts time out before they are "
                      "looked at")
        delay, window = limits.authentication_failure_delay, limits.authentication_failure_window
        if delay and window <= delay:
            self.warn(["limits", "authentication-failure-window"],
                      f"{window} s is not longer than authentication-failure-delay {delay} s: failures are "
                      "forgotten before the longest wait is reached")
        trusted = limits.authentication_trusted_time
        if delay and 0 < trusted < window:
            self.warn(["limits", "authentication-trusted-time"],
                      f"{trusted} s is shorter than authentication-failure-window {window} s: a user who "
                      "logged in a moment ago can wait for another name's failures older than the login")
        if limits.connection_limit is not None and self.sstp.tls_offload is not None \
                and not self.sstp.accept_proxy_protocol:
            self.warn(["limits", "connection-limit"], "with tls-offload and without accept-proxy-protocol "
                      "every client comes from the balancer's address and shares one limit")

    # --- metrics ---------------------------------------------------------------------------

    def prometheus(self) -> None:
        metrics = self.sstp.prometheus
        if metrics is None:
            return
        address, port = metrics.listen_address, metrics.port
        if address.is_multicast:
            self.error(["prometheus", "listen-address", str(address)],
                       "a multicast address cannot be listened on")
        if address.is_unspecified:
            self.warn(["prometheus", "listen-address", str(address)], "metrics are served on every address, "
                      "the clients' tunnels included, without authentication")
        path = ["prometheus", "port", str(port)]
        if port == self.sstp.port:
            # The SSTP listener binds every address, so the same port clashes on any address.
            self.error(path, f"TCP port {port} is the SSTP listener's (vpn sstp port), which listens on "
                             "every address")
            return
        owner = self.probe.port_in_use(port)
        if owner:
            self.error(path, f"TCP port {port} is in use by {owner}")

    # --- TLS -------------------------------------------------------------------------------

    def ssl(self) -> None:
        ssl = self.sstp.ssl
        if ssl is None:
            self.error(["ssl"], "a certificate is required (ssl certificate, or ssl cert-file and key-file)")
            return
        loaded = self._server_certificate(ssl)
        ca = self._ca(ssl)
        for name in ssl.intermediate_certificate:
            self._pki_ca(["ssl", "intermediate-certificate", name], name)
        if ssl.ciphers is not None and ssl.tls_version_min == "1.3":
            self.warn(["ssl", "ciphers"], "only applies to TLS 1.2, but tls-version-min is 1.3")
        if ssl.tls_version_min in ("1.0", "1.1"):
            self.warn(["ssl", "tls-version-min"], f"{ssl.tls_version_min} accepts deprecated TLS versions "
                      "(RFC 8996) and lowers the OpenSSL security level to 0; use it only for clients "
                      "that cannot do TLS 1.2, such as Windows 7")
        if loaded is None:
            return
        certificate, key, where = loaded
        self._key_and_certificate(certificate, key, where)
        if ca is not None and ca.subject not in (certificate.issuer, certificate.subject):
            intermediates = [self._pki_ca([], n) for n in ssl.intermediate_certificate]
            if not any(i is not None and i.subject == certificate.issuer for i in intermediates):
                self.warn(where, "is not issued by the configured CA (issuer "
                          f"{certificate.issuer.rfc4514_string()})")

    def _read(self, path: list[str], file_name: str) -> bytes | None:
        reader = getattr(self.probe, "read_file", None)
        try:
            return reader(file_name) if reader is not None else Path(file_name).read_bytes()
        except OSError as exc:
            self.error(path, f"cannot read {file_name}: {exc.strerror or exc}")
            return None

    def _private_file(self, path: list[str], file_name: str) -> None:
        """A private key readable by others is refused: anyone who reads it can impersonate us."""
        mode_of = getattr(self.probe, "file_mode", None)
        try:
            mode = mode_of(file_name) if mode_of is not None else os.stat(file_name).st_mode & 0o7777
        except OSError:
            return  # reading it already failed and was reported
        if mode & 0o077:
            self.error(path, f"{file_name} is readable or writable by others (mode {mode:04o}); "
                       f"chmod 600 {file_name}")

    def _server_certificate(self, ssl: ServerSsl) -> tuple[x509.Certificate, Any, list[str]] | None:
        by_name = ssl.certificate is not None
        by_file = ssl.cert_file is not None or ssl.key_file is not None
        if by_name and by_file:
            self.error(["ssl"], "use either certificate (PKI) or cert-file and key-file, not both")
            return None
        if by_file:
            if ssl.cert_file is None or ssl.key_file is None:
                missing = "cert-file" if ssl.cert_file is None else "key-file"
                self.error(["ssl"], f"{missing} is required with " +
                           ("key-file" if missing == "cert-file" else "cert-file"))
                return None
            cert_pem = self._read(["ssl", "cert-file"], ssl.cert_file)
            key_pem = self._read(["ssl", "key-file"], ssl.key_file)
            if cert_pem is None or key_pem is None:
                return None
            self._private_file(["ssl", "key-file"], ssl.key_file)
            try:
                certificate = x509.load_pem_x509_certificate(cert_pem)
            except ValueError:
                self.error(["ssl", "cert-file"], f"{ssl.cert_file} holds no PEM certificate")
                return None
            try:
                key = serialization.load_pem_private_key(key_pem, None)
            except TypeError:
                self.error(["ssl", "key-file"], f"{ssl.key_file}: the key is encrypted; an unencrypted key "
                           "is needed to start unattended")
                return None
            except ValueError:
                self.error(["ssl", "key-file"], f"{ssl.key_file} holds no PEM private key")
                return None
            return certificate, key, ["ssl", "cert-file"]
        if ssl.certificate is None:
            self.error(["ssl"], "a certificate is required (ssl certificate, or ssl cert-file and key-file)")
            return None
        name = ssl.certificate
        path = ["ssl", "certificate", name]
        entry = self.config.pki.certificate.get(name)
        if entry is None:
            self.error(path, f'"pki certificate {name}" does not exist')
            return None
        if entry.certificate is None:
            self.error(path, f'"pki certificate {name} certificate" is missing')
            return None
        private = entry.private
        if private is None or private.key is None:
            self.error(path, f'"pki certificate {name} private key" is missing')
            return None
        if private.password_protected:
            self.error(path, f'"pki certificate {name} private key" is password-protected; an unencrypted '
                       "key is needed to start unattended")
            return None
        try:
            return _load_der_certificate(entry.certificate), _load_der_key(private), path
        except (ValueError, TypeError):
            return None  # reported by _verify_pki

    def _pki_ca(self, path: list[str], name: str) -> x509.Certificate | None:
        entry = self.config.pki.ca.get(name)
        if entry is None or entry.certificate is None:
            if path:
                self.error(path, f'"pki ca {name}" does not exist' if entry is None
                           else f'"pki ca {name} certificate" is missing')
            return None
        try:
            return _load_der_certificate(entry.certificate)
        except ValueError:
            return None

    def _ca(self, ssl: ServerSsl) -> x509.Certificate | None:
        if ssl.ca_certificate is not None and ssl.ca_cert_file is not None:
            self.error(["ssl"], "use either ca-certificate (PKI) or ca-cert-file, not both")
            return None
        if ssl.ca_certificate is not None:
            ca = self._pki_ca(["ssl", "ca-certificate", ssl.ca_certificate], ssl.ca_certificate)
            path = ["ssl", "ca-certificate", ssl.ca_certificate]
        elif ssl.ca_cert_file is not None:
            data = self._read(["ssl", "ca-cert-file"], ssl.ca_cert_file)
            if data is None:
                return None
            try:
                ca = x509.load_pem_x509_certificate(data)
            except ValueError:
                self.error(["ssl", "ca-cert-file"], f"{ssl.ca_cert_file} holds no PEM certificate")
                return None
            path = ["ssl", "ca-cert-file"]
        else:
            self.error(["ssl"], "a CA certificate is required (ca-certificate or ca-cert-file)")
            return None
        if ca is not None and ca.not_valid_after_utc < self.now:
            self.warn(path, f"the CA certificate expired on {ca.not_valid_after_utc:%Y-%m-%d}")
        return ca

    def _key_and_certificate(self, certificate: x509.Certificate, key: Any, where: list[str]) -> None:
        public = certificate.public_key()
        if _public_der(public) != _public_der(key.public_key()):
            self.error(where, "the private key does not match the certificate")
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            self.error(where, f"RSA key of {public.key_size} bits; at least {MIN_RSA_BITS} are required")
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            self.warn(where, "Ed25519/Ed448 certificates are not supported by Windows SSTP clients")
        elif not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            # Named, not isinstance'd: cryptography deprecates its DSA classes (a warning on use).
            if "DSA" in type(public).__name__:
                self.error(where, "DSA keys are not accepted by SSTP clients; use RSA or ECDSA")
            else:
                self.error(where, f"unsupported key type {type(public).__name__}")
        if self.now < certificate.not_valid_before_utc:
            self.error(where, f"the certificate is not valid before "
                       f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC")
        elif certificate.not_valid_after_utc < self.now:
            self.error(where, "the certificate expired on "
                       f"{certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
        elif certificate.not_valid_after_utc - self.now < EXPIRY_WARNING:
            self.warn(where, f"the certificate expires on {certificate.not_valid_after_utc:%Y-%m-%d}")
        host = self.sstp.host_name
        if host is not None:
            names = _certificate_names(certificate)
            if not any(name_matches(host, name) for name in names):
                self.error(["host-name", host], "not among the certificate's names ("
                           + (", ".join(names) or "none") + ")")


# --- interfaces sstpc ---------------------------------------------------------------------------


def _verify_sstpc(config: Config, name: str, interface: SstpcInterface, report: _Report) -> None:
    path = ["interfaces", "sstpc", name]
    auth = interface.authentication
    if auth.username is None or auth.password is None:
        report.error([*path, "authentication"], "both username and password are required")
    if interface.server is None:
        report.error([*path, "server"], "the remote SSTP server is required")
    ca = interface.ssl.ca_certificate
    if ca is None:
        if interface.verify_server_certificate:
            report.error([*path, "ssl", "ca-certificate"],
                         "required to check the server (or set verify-server-certificate no)")
    else:
        entry = config.pki.ca.get(ca)
        if entry is None:
            report.error([*path, "ssl", "ca-certificate", ca], f'"pki ca {ca}" does not exist')
        elif entry.certificate is None:
            report.error([*path, "ssl", "ca-certificate", ca], f'"pki ca {ca} certificate" is missing')
    if not interface.verify_server_certificate:
        report.warn([*path, "verify-server-certificate"], "no: the server is not authenticated")
    if interface.http_proxy is not None and interface.http_proxy.address is None:
        report.error([*path, "http-proxy", "address"], "required when http-proxy is set")
