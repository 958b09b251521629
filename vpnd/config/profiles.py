"""What a client needs to dial this server, read from the configuration: `profile_facts()`.

The decisions live here (which host name, which authentication method, whether the client
must be given our CA); `vpnd.config.generate.render_client_profile` only renders them.
A CA is handed out when the server certificate is self-signed, or when the CA that signs it
is not in the system's trust bundle (a private CA); a publicly trusted CA is not imported.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vpnd.config.definitions import Config, SstpServer
from vpnd.config.errors import ConfigError

ProfileFormat = Literal["windows", "routeros", "linux"]
FORMATS: tuple[ProfileFormat, ...] = ("windows", "routeros", "linux")
SYSTEM_TRUST_BUNDLES = (
    Path("/etc/ssl/certs/ca-certificates.crt"),  # Debian, Ubuntu, Alpine
    Path("/etc/pki/tls/certs/ca-bundle.crt"),  # Fedora, RHEL
)

# Preferred first: what each client calls the PPP authentication protocols we accept.
_WINDOWS_AUTH = {"mschap-v2": "MSChapv2", "chap": "Chap", "pap": "Pap"}
EapProfile = Literal["mschap-v2", "peap", "tls"]
EAP_PROFILES: tuple[EapProfile, ...] = ("mschap-v2", "peap", "tls")
_WINDOWS_EAP: dict[EapProfile, str] = {"mschap-v2": "", "peap": "-Peap", "tls": "-Tls -UserCertificate"}
_ROUTEROS_AUTH = {"mschap-v2": "mschap2", "mschap": "mschap1", "chap": "chap", "pap": "pap"}
_NM_REFUSE = {"pap": "refuse-pap", "chap": "refuse-chap", "mschap": "refuse-mschap",
              "mschap-v2": "refuse-mschapv2"}


@dataclass(frozen=True, slots=True)
class CaToImport:
    pem: str
    subject: str
    reason: str  # "self-signed server certificate" / "private CA ..."
    file_name: str  # suggested file name on the client


@dataclass(frozen=True, slots=True)
class ProfileFacts:
    connection_name: str
    server: str  # host the client dials (and checks the certificate against)
    port: int
    user: str
    password: str | None  # only when asked to include it
    ca: CaToImport | None  # None: the chain ends in a publicly trusted CA
    windows_auth: str  # -AuthenticationMethod value
    routeros_auth: list[str]  # authentication= values
    nm_refuse: list[str]  # refuse-* keys set to yes
    ipv6: bool
    notes: list[str]
    # With windows_auth Eap: the New-EapConfiguration switch ("" is EAP-MSCHAPv2, "-Peap" PEAP
    # with MS-CHAPv2 inside, "-Tls -UserCertificate" EAP-TLS with a user certificate).
    windows_eap: str = ""

    @property
    def address(self) -> str:
        """host or host:port (443 is left out)."""
        return self.server if self.port == 443 else f"{self.server}:{self.port}"

    @property
    def uuid(self) -> str:
        """Stable per (server, port, user), so re-importing a profile replaces the connection."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sstp://{self.user}@{self.server}:{self.port}"))


def _server(config: Config) -> SstpServer:
    sstp = config.vpn.sstp
    if sstp is None:
        raise ConfigError("vpn sstp is not configured: there is no server to make a profile for")
    return sstp


def _der_certificate(body: str, where: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode(body))
    except (ValueError, binascii.Error) as exc:
        raise ConfigError(f"{where}: not a certificate: {exc}") from None


def _pem_certificate(data: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{where}: not a PEM certificate: {exc}") from None


def _read(read_file: Callable[[str], bytes], name: str, where: str) -> bytes:
    try:
        return read_file(name)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {name}: {exc.strerror or exc}") from None


def server_certificate(config: Config, read_file: Callable[[str], bytes]) -> x509.Certificate | None:
    ssl = _server(config).ssl
    if ssl is None:
        return None
    if ssl.certificate is not None:
        entry = config.pki.certificate.get(ssl.certificate)
        if entry is None or entry.certificate is None:
            raise ConfigError(f"vpn sstp ssl certificate {ssl.certificate}: "
                              f'"pki certificate {ssl.certificate}" does not exist')
        return _der_certificate(entry.certificate, f"pki certificate {ssl.certificate}")
    if ssl.cert_file is not None:
        data = _read(read_file, ssl.cert_file, "vpn sstp ssl cert-file")
        return _pem_certificate(data, f"vpn sstp ssl cert-file {ssl.cert_file}")
    return None


def _configured_ca(config: Config, read_file: Callable[[str], bytes]) -> tuple[x509.Certificate, str] | None:
    ssl = _server(config).ssl
    if ssl is None:
        return None
    if ssl.ca_certificate is not None:
        entry = config.pki.ca.get(ssl.ca_certificate)
        if entry is None or entry.certificate is None:
            raise ConfigError(f"vpn sstp ssl ca-certificate {ssl.ca_certificate}: "
                              f'"pki ca {ssl.ca_certificate}" does not exist')
        return _der_certificate(entry.certificate, f"pki ca {ssl.ca_certificate}"), ssl.ca_certificate
    if ssl.ca_cert_file is not None:
        data = _read(read_file, ssl.ca_cert_file, "vpn sstp ssl ca-cert-file")
        return _pem_certificate(data, f"vpn sstp ssl ca-cert-file {ssl.ca_cert_file}"), "ca"
    return None


def _trusted_subjects(bundles: tuple[Path, ...]) -> set[bytes]:
    """DER subjects of the CAs the system trusts (an empty set when no bundle can be read)."""
    subjects: set[bytes] = set()
    for bundle in bundles:
        try:
            data = bundle.read_bytes()
        except OSError:
            continue
        try:
            with warnings.catch_warnings():  # old roots with odd serial numbers are still roots
                warnings.simplefilter("ignore")
                certificates = x509.load_pem_x509_certificates(data)
        except ValueError:
            continue
        subjects.update(cert.subject.public_bytes() for cert in certificates)
    return subjects


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def _host_from_certificate(certificate: x509.Certificate) -> str | None:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for name in names.get_values_for_type(x509.DNSName):
            if "*" not in name:
                return str(name)
        for address in names.get_values_for_type(x509.IPAddress):
            return str(address)
    except x509.ExtensionNotFound:
        pass
    common = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = common[0].value if common else None
    if isinstance(value, str) and value and not any(c in value for c in "* "):
        return value
    return None


def ca_to_import(config: Config, *, read_file: Callable[[str], bytes] = lambda name: Path(name).read_bytes(),
                 trust_bundles: tuple[Path, ...] = SYSTEM_TRUST_BUNDLES) -> CaToImport | None:
    """The certificate a client must add to its trusted roots, or None when it need not."""
    certificate = server_certificate(config, read_file)
    if certificate is not None and certificate.issuer == certificate.subject:
        return CaToImport(_pem(certificate), certificate.subject.rfc4514_string(),
                          "self-signed server certificate", "vpnd-server.crt")
    configured = _configured_ca(config, read_file)
    if configured is None:
        return None
    ca, name = configured
    if ca.subject.public_bytes() in _trusted_subjects(trust_bundles):
        return None
    return CaToImport(_pem(ca), ca.subject.rfc4514_string(), f'private CA "{name}"', f"vpnd-{name}.crt")


def profile_facts(
    config: Config,
    user: str,
    *,
    server: str | None = None,
    include_password: bool = False,
    connection_name: str | None = None,
    read_file: Callable[[str], bytes] = lambda name: Path(name).read_bytes(),
    trust_bundles: tuple[Path, ...] = SYSTEM_TRUST_BUNDLES,
    eap: EapProfile | None = None,
) -> ProfileFacts:
    """Everything a client profile for `user` says; ConfigError names what is missing.
    ``eap``: the EAP method Windows logs in with when `eap` is among the protocols (default:
    PEAP with RADIUS, which runs it; EAP-MSCHAPv2 with local users)."""
    sstp = _server(config)
    authentication = sstp.authentication
    notes: list[str] = []
    password: str | None = None
    if authentication.mode == "local":
        entry = authentication.local_users.username.get(user)
        if entry is None:
            known = ", ".join(sorted(authentication.local_users.username)) or "none"
            raise ConfigError(f'vpn sstp authentication local-users username {user}: no such user '
                              f"(local users: {known})")
        if entry.disable:
            raise ConfigError(f"vpn sstp authentication local-users username {user}: the user is disabled")
        if include_password and entry.password is not None:
            password = entry.password.get_secret_value()
    elif authentication.mode == "radius":
        notes.append(f'authentication is by RADIUS: "{user}" must exist there')
        if include_password:
            notes.append("the password lives in RADIUS and is not part of this profile")
    else:
        raise ConfigError("vpn sstp authentication mode noauth: clients do not log in, "
                          "and Windows and RouterOS cannot dial such a server")

    certificate = server_certificate(config, read_file)
    if server is None:
        server = sstp.host_name or (_host_from_certificate(certificate) if certificate else None)
    if not server:
        raise ConfigError("the server's name is unknown: give --server NAME "
                          "(or set vpn sstp host-name)")

    protocols = authentication.protocols
    windows = next((_WINDOWS_AUTH[p] for p in _WINDOWS_AUTH if p in protocols), None)
    windows_eap = ""
    if "eap" in protocols:
        chosen = eap or ("peap" if authentication.mode == "radius" else "mschap-v2")
        if chosen != "mschap-v2" and authentication.mode != "radius":
            raise ConfigError(f"EAP {chosen} needs authentication mode radius: local users log in "
                              "with EAP-MSCHAPv2")
        windows, windows_eap = "Eap", _WINDOWS_EAP[chosen]
        notes.append(f"Windows logs in with EAP ({chosen}); it asks to trust the RADIUS server's "
                     "certificate on first use" if chosen != "mschap-v2" else
                     "Windows logs in with EAP-MSCHAPv2")
    elif eap is not None:
        raise ConfigError("--eap needs eap in vpn sstp authentication protocols")
    if windows is None:
        raise ConfigError("vpn sstp authentication protocols: Windows needs eap, mschap-v2, chap or pap")
    routeros = [_ROUTEROS_AUTH[p] for p in _ROUTEROS_AUTH if p in protocols]
    refuse = [_NM_REFUSE[p] for p in _NM_REFUSE if p not in protocols] + ["refuse-eap"]
    ca = ca_to_import(config, read_file=read_file, trust_bundles=trust_bundles)
    if ca is not None:
        notes.append(f"the client must trust {ca.subject} ({ca.reason})")
    return ProfileFacts(
        connection_name=connection_name or f"vpnd {server}",
        server=server,
        port=sstp.port,
        user=user,
        password=password,
        ca=ca,
        windows_auth=windows,
        routeros_auth=routeros,
        nm_refuse=refuse,
        ipv6=sstp.ppp_options.ipv6 != "deny",
        notes=notes,
        windows_eap=windows_eap,
    )
