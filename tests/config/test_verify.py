"""verify(): one failing and one passing case for every rule; certificates made here."""

import base64
import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.config import examples
from vpnd.config.errors import ConfigError
from vpnd.config.model import Config, model_from_tree
from vpnd.config.tree import ConfigTree
from vpnd.config.verify import SystemProbe, VerifyResult, name_matches, verify

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


# --- certificates --------------------------------------------------------------------------------


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(key, *, cn: str = "vpn.example.com", names: tuple[str, ...] | None = ("vpn.example.com",),
                issuer_key=None, issuer_cn: str = "Test CA", ca: bool = False,
                not_before: datetime.datetime = NOW - 30 * DAY,
                not_after: datetime.datetime = NOW + 365 * DAY) -> x509.Certificate:
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn))
               .issuer_name(_name(cn if issuer_key is None else issuer_cn))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def der_b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def key_b64(key) -> str:
    return base64.b64encode(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption())).decode()


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def pki() -> dict:
    ca_key = rsa_key()
    server_key = rsa_key()
    ca = certificate(ca_key, cn="Test CA", names=None, ca=True)
    server = certificate(server_key, names=("vpn.example.com", "*.example.org"), issuer_key=ca_key)
    return {"ca_key": ca_key, "ca": ca, "server_key": server_key, "server": server}


class FakeProbe:
    def __init__(self, ports: dict[int, str] | None = None, files: dict[str, bytes] | None = None,
                 modes: dict[str, int] | None = None) -> None:
        self.ports = ports or {}
        self.files = files or {}
        self.modes = modes or {}

    def port_in_use(self, port: int) -> str | None:
        return self.ports.get(port)

    def read_file(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.files[path]

    def file_mode(self, path: str) -> int:
        self.read_file(path)
        return self.modes.get(path, 0o600)


def base_lines(pki: dict) -> list[str]:
    return [
        f"set pki ca ca certificate '{der_b64(pki['ca'])}'",
        f"set pki certificate server certificate '{der_b64(pki['server'])}'",
        f"set pki certificate server private key '{key_b64(pki['server_key'])}'",
        "set vpn sstp authentication local-users username alice password 'secret'",
        "set vpn sstp authentication local-users username alice static-ip '10.0.0.10'",
        "set vpn sstp authentication mode 'local'",
        "set vpn sstp client-ip-pool P range '10.0.0.0/25'",
        "set vpn sstp default-pool 'P'",
        "set vpn sstp gateway-address '10.0.0.254'",
        "set vpn sstp host-name 'vpn.example.com'",
        "set vpn sstp ssl ca-certificate 'ca'",
        "set vpn sstp ssl certificate 'server'",
    ]


def run(pki: dict, *lines: str, delete: tuple[str, ...] = (), probe: FakeProbe | None = None,
        now: datetime.datetime = NOW, base: bool = True) -> VerifyResult:
    tree = ConfigTree.from_commands(base_lines(pki) if base else [])
    for line in lines:
        tree.set(line.split())
    for line in delete:
        tree.delete(line.split())
    return verify(model_from_tree(tree), probe=probe or FakeProbe(), now=now)


def assert_clean(result: VerifyResult) -> None:
    assert result.errors == [] and result.warnings == []


# --- the base configuration ---------------------------------------------------------------------


def test_base_configuration_is_clean(pki: dict) -> None:
    assert_clean(run(pki))


def test_empty_configuration_is_clean() -> None:
    assert_clean(verify(Config(), probe=FakeProbe(), now=NOW))


def test_result_raises_all_errors_at_once(pki: dict) -> None:
    result = run(pki, "vpn sstp mtu 1400", delete=("vpn sstp ssl", "vpn sstp authentication local-users"))
    assert len(result.errors) >= 2 and not result.ok
    with pytest.raises(ConfigError) as info:
        result.raise_for_errors()
    assert info.value.messages == result.errors


# --- VyOS's checks ------------------------------------------------------------------------------


def test_port_in_use_by_another_program(pki: dict) -> None:
    result = run(pki, probe=FakeProbe(ports={443: "nginx (pid 42)"}))
    assert result.errors == ["vpn sstp port 443: TCP port 443 is in use by nginx (pid 42)"]
    assert_clean(run(pki, "vpn sstp port 8443", probe=FakeProbe(ports={443: "nginx (pid 42)"})))


def test_local_mode_requires_users(pki: dict) -> None:
    result = run(pki, delete=("vpn sstp authentication local-users",))
    assert ('vpn sstp authentication mode local: local authentication requires at least one '
            '"local-users username"') in result.errors


def test_all_users_disabled_is_a_warning(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication local-users username alice disable")
    assert result.errors == []
    assert result.warnings == ["vpn sstp authentication local-users: every local user is disabled"]


def test_local_user_password_is_required(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication local-users username bob")
    assert result.errors == ["vpn sstp authentication local-users username bob: password is required"]
    assert_clean(run(pki, "vpn sstp authentication local-users username bob password pw"))


def test_rate_limit_needs_both_directions(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication local-users username alice rate-limit upload 100")
    assert result.errors == [
        "vpn sstp authentication local-users username alice rate-limit: both upload and download "
        "are required"]
    assert_clean(run(pki, "vpn sstp authentication local-users username alice rate-limit upload 100",
                     "vpn sstp authentication local-users username alice rate-limit download 200"))


def test_radius_mode_requires_an_enabled_server(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication mode radius")
    assert result.errors == [
        "vpn sstp authentication radius server: RADIUS authentication requires at least one enabled server"]
    result = run(pki, "vpn sstp authentication mode radius",
                 "vpn sstp authentication radius server 192.0.2.1 key k",
                 "vpn sstp authentication radius server 192.0.2.1 disable")
    assert len(result.errors) == 1
    assert_clean(run(pki, "vpn sstp authentication mode radius",
                     "vpn sstp authentication radius server 192.0.2.1 key k"))


def test_only_backup_servers_is_a_warning(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication mode radius",
                 "vpn sstp authentication radius server 192.0.2.1 key k",
                 "vpn sstp authentication radius server 192.0.2.1 backup")
    assert result.errors == []
    assert result.warnings == ["vpn sstp authentication radius server: every enabled server is a "
                               "backup server"]


def test_radius_server_key_is_required(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication radius server 192.0.2.1 port 1645")
    assert result.errors == ["vpn sstp authentication radius server 192.0.2.1: key is required"]


def test_dynamic_author_requires_a_key(pki: dict) -> None:
    result = run(pki, "vpn sstp authentication radius dynamic-author server 192.0.2.1")
    assert result.errors == ["vpn sstp authentication radius dynamic-author: key is required when "
                             "server is set"]
    assert_clean(run(pki, "vpn sstp authentication radius dynamic-author server 192.0.2.1",
                     "vpn sstp authentication radius dynamic-author key k"))
    only_key = run(pki, "vpn sstp authentication radius dynamic-author key k")
    assert only_key.errors == [] and only_key.warnings == [
        "vpn sstp authentication radius dynamic-author: key is set but server is not"]


def test_next_pool_must_exist_and_pool_needs_a_range(pki: dict) -> None:
    result = run(pki, "vpn sstp client-ip-pool P next-pool MISSING")
    assert result.errors == ['vpn sstp client-ip-pool P next-pool: pool "MISSING" does not exist']
    result = run(pki, "vpn sstp client-ip-pool Q next-pool P")
    assert result.errors == ["vpn sstp client-ip-pool Q: range is required when next-pool is set"]
    assert_clean(run(pki, "vpn sstp client-ip-pool P next-pool Q", "vpn sstp client-ip-pool Q "
                                                                   "range 10.0.1.0/24"))


def test_next_pool_cycles(pki: dict) -> None:
    result = run(pki, "vpn sstp client-ip-pool P next-pool Q", "vpn sstp client-ip-pool Q range 10.0.1.0/24",
                 "vpn sstp client-ip-pool Q next-pool R", "vpn sstp client-ip-pool R range 10.0.2.0/24",
                 "vpn sstp client-ip-pool R next-pool P")
    assert result.errors == ["vpn sstp client-ip-pool P next-pool: cycle: P -> Q -> R -> P"]
    itself = run(pki, "vpn sstp client-ip-pool P next-pool P")
    assert itself.errors == ["vpn sstp client-ip-pool P next-pool: cycle: P -> P"]


def test_missing_gateway_address_is_a_warning(pki: dict) -> None:
    """VyOS warns and runs; so do we, on RFC 7600's dummy address (the daemon test proves it runs)."""
    result = run(pki, delete=("vpn sstp gateway-address",))
    assert result.errors == []
    assert result.warnings == ["vpn sstp gateway-address: not set; the server uses 192.0.0.8 (RFC 7600's "
                               "IPv4 dummy address) as its own address on client links"]


def test_default_pool_must_exist_and_missing_is_a_warning(pki: dict) -> None:
    result = run(pki, "vpn sstp default-pool NOPE")
    assert result.errors == ['vpn sstp default-pool: pool "NOPE" does not exist']
    result = run(pki, delete=("vpn sstp default-pool",))
    assert result.errors == [] and result.warnings == ["vpn sstp default-pool: not set"]


def test_ipv6_delegate_requires_prefix_and_delegation_prefix(pki: dict) -> None:
    result = run(pki, "vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6",
                 "vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40")
    assert result.errors == [
        "vpn sstp client-ipv6-pool V6: delegate requires a prefix in the same pool",
        "vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40: delegation-prefix is required",
    ]
    assert_clean(run(pki, "vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6",
                     "vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40 delegation-prefix 56",
                     "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48 mask 64"))


def test_ipv6_lengths_must_not_be_shorter_than_the_prefix(pki: dict) -> None:
    result = run(pki, "vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6",
                 "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/56 mask 48",
                 "vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40 delegation-prefix 32")
    assert result.errors == [
        "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/56 mask: 48 is shorter than the prefix length 56",
        "vpn sstp client-ipv6-pool V6 delegate 2001:db8:100::/40 delegation-prefix: 32 is shorter than the "
        "prefix length 40",
    ]


def test_default_ipv6_pool_must_exist_and_missing_is_a_warning(pki: dict) -> None:
    v6 = ("vpn sstp ppp-options ipv6 allow", "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48")
    assert run(pki, *v6, "vpn sstp default-ipv6-pool X").errors == [
        'vpn sstp default-ipv6-pool: pool "X" does not exist']
    result = run(pki, *v6)
    assert result.errors == [] and result.warnings == ["vpn sstp default-ipv6-pool: not set"]


def test_local_mode_requires_a_pool(pki: dict) -> None:
    result = run(pki, delete=("vpn sstp client-ip-pool", "vpn sstp default-pool",
                              "vpn sstp authentication local-users username alice static-ip"))
    assert result.errors == [
        "vpn sstp authentication mode local: local authentication requires a client-ip-pool or "
        "client-ipv6-pool"]
    assert_clean(run(pki, "vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6",
                     "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48",
                     delete=("vpn sstp client-ip-pool", "vpn sstp default-pool",
                             "vpn sstp authentication local-users username alice static-ip")))


def test_name_server_and_wins_limits(pki: dict) -> None:
    ok = ["vpn sstp name-server 192.0.2.1", "vpn sstp name-server 192.0.2.2", "vpn sstp "
                                                                              "name-server 2001:db8::1",
          "vpn sstp name-server 2001:db8::2", "vpn sstp name-server 2001:db8::3",
          "vpn sstp wins-server 192.0.2.1", "vpn sstp wins-server 192.0.2.2"]
    assert_clean(run(pki, *ok))
    result = run(pki, *ok, "vpn sstp name-server 192.0.2.3", "vpn sstp name-server 2001:db8::4",
                 "vpn sstp wins-server 192.0.2.3")
    assert result.errors == [
        "vpn sstp name-server: at most 2 IPv4 name servers, not 3",
        "vpn sstp name-server: at most 3 IPv6 name servers, not 4",
        "vpn sstp wins-server: at most 2 WINS servers, not 3",
    ]


def test_ssl_is_required(pki: dict) -> None:
    result = run(pki, delete=("vpn sstp ssl",))
    assert result.errors == [
        "vpn sstp ssl: a certificate is required (ssl certificate, or ssl cert-file and key-file)"]


def test_ssl_certificate_must_exist_with_certificate_and_key(pki: dict) -> None:
    result = run(pki, delete=("vpn sstp ssl certificate",))
    assert result.errors == [
        "vpn sstp ssl: a certificate is required (ssl certificate, or ssl cert-file and key-file)"]
    result = run(pki, "vpn sstp ssl certificate other")
    assert result.errors == ['vpn sstp ssl certificate other: "pki certificate other" does not exist']
    result = run(pki, delete=("pki certificate server certificate",))
    assert result.errors == ['vpn sstp ssl certificate server: '
                             '"pki certificate server certificate" is missing']
    result = run(pki, delete=("pki certificate server private",))
    assert result.errors == ['vpn sstp ssl certificate server: '
                             '"pki certificate server private key" is missing']
    result = run(pki, "pki certificate server private password-protected")
    assert result.errors == ['vpn sstp ssl certificate server: "pki certificate server private key" is '
                             "password-protected; an unencrypted key is needed to start unattended"]


def test_ssl_ca_certificate_is_required_and_must_exist(pki: dict) -> None:
    result = run(pki, delete=("vpn sstp ssl ca-certificate",))
    assert result.errors == ["vpn sstp ssl: a CA certificate is required (ca-certificate or ca-cert-file)"]
    result = run(pki, "vpn sstp ssl ca-certificate other")
    assert result.errors == ['vpn sstp ssl ca-certificate other: "pki ca other" does not exist']
    result = run(pki, "pki ca empty description x", "vpn sstp ssl ca-certificate empty")
    assert result.errors == ['vpn sstp ssl ca-certificate empty: "pki ca empty certificate" is missing']


# --- checks VyOS does not make ----------------------------------------------------------------------


def test_pools_must_not_overlap(pki: dict) -> None:
    result = run(pki, "vpn sstp client-ip-pool Q range 10.0.0.100-10.0.0.120",
                 "vpn sstp authentication local-users username alice static-ip 10.0.0.110")
    assert len(result.errors) == 2
    assert result.errors[0] == ("vpn sstp client-ip-pool P range 10.0.0.0/25: overlaps "
                                "client-ip-pool Q range 10.0.0.100-10.0.0.120")
    assert "inside more than one pool: P, Q" in result.errors[1]
    assert_clean(run(pki, "vpn sstp client-ip-pool Q range 10.0.0.128-10.0.0.200"))
    inside = run(pki, "vpn sstp client-ip-pool P range 10.0.0.10")
    assert inside.errors == ["vpn sstp client-ip-pool P range 10.0.0.0/25: overlaps client-ip-pool P range "
                             "10.0.0.10"]


def test_gateway_must_be_outside_the_pools(pki: dict) -> None:
    result = run(pki, "vpn sstp client-ip-pool Q range 10.0.1.1-10.0.1.99", "vpn sstp "
                                                                            "gateway-address 10.0.1.1")
    assert result.errors == ["vpn sstp gateway-address 10.0.1.1: inside client-ip-pool Q range "
                             "10.0.1.1-10.0.1.99"]
    # Inside a prefix (the client subnet, as in VyOS's documentation): excluded, with a warning.
    result = run(pki, "vpn sstp gateway-address 10.0.0.1")
    assert result.errors == []
    assert result.warnings == ["vpn sstp gateway-address 10.0.0.1: inside client-ip-pool P range "
                               "10.0.0.0/25; "
                               "it is excluded from the pool"]


def test_static_ip_may_be_outside_the_pools_but_must_be_unique(pki: dict) -> None:
    # Outside every pool, as accel-ppp (and so VyOS) accepts: handed out as a routed /32.
    result = run(pki, "vpn sstp authentication local-users username alice static-ip 10.9.9.9")
    assert result.errors == [] and not any("static-ip" in w for w in result.warnings)
    result = run(pki, "vpn sstp authentication local-users username bob password x",
                 "vpn sstp authentication local-users username bob static-ip 10.0.0.10")
    assert result.errors == ["vpn sstp authentication local-users username bob static-ip 10.0.0.10: "
                             'also the static-ip of user "alice"']
    result = run(pki, "vpn sstp gateway-address 10.0.0.10")
    assert result.errors == ["vpn sstp authentication local-users username alice static-ip "
                             "10.0.0.10: is the gateway-address"]


def test_ipv6_pools_with_ipv6_denied_are_unused(pki: dict) -> None:
    v6 = ("vpn sstp default-ipv6-pool V6", "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48")
    result = run(pki, *v6)
    assert result.errors == []
    assert result.warnings == ['vpn sstp client-ipv6-pool: IPv6 pools are configured but "ppp-options ipv6" '
                               "is deny, so they are unused (set it to allow, prefer or require)"]
    assert_clean(run(pki, *v6, "vpn sstp ppp-options ipv6 prefer"))


def test_ipv6_prefix_mask_other_than_64_is_a_warning(pki: dict) -> None:
    v6 = ("vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6")
    result = run(pki, *v6, "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48 mask 56")
    assert result.errors == []
    assert result.warnings == ["vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48 mask: 56: clients form "
                               "addresses from router advertisements (SLAAC) only for /64 prefixes"]
    assert_clean(run(pki, *v6, "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48 mask 64"))


V6_ON = ("vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool V6",
         "vpn sstp client-ipv6-pool V6 prefix 2001:db8:1::/48")


def test_ipv6_interface_ids_must_be_non_zero_and_differ(pki: dict) -> None:
    result = run(pki, *V6_ON, "vpn sstp ppp-options ipv6-interface-id 0:0:0:0",
                 "vpn sstp ppp-options ipv6-peer-interface-id 0:00:0:0000")
    assert result.errors == [
        "vpn sstp ppp-options ipv6-interface-id 0:0:0:0: an interface identifier must not be zero",
        "vpn sstp ppp-options ipv6-peer-interface-id 0:00:0:0000: an interface identifier must not be zero",
    ]
    result = run(pki, *V6_ON, "vpn sstp ppp-options ipv6-interface-id 0:0:0:1",
                 "vpn sstp ppp-options ipv6-peer-interface-id 0:0:0:01")
    assert result.errors == ["vpn sstp ppp-options ipv6-peer-interface-id 0:0:0:01: the same as "
                             "ipv6-interface-id: the two ends of a link need different identifiers"]
    assert_clean(run(pki, *V6_ON, "vpn sstp ppp-options ipv6-interface-id 0:0:0:1",
                     "vpn sstp ppp-options ipv6-peer-interface-id 0:0:0:2",
                     "vpn sstp ppp-options ipv6-accept-peer-interface-id"))


def test_ipv6_interface_id_options_that_cannot_act_are_warnings(pki: dict) -> None:
    result = run(pki, *V6_ON, "vpn sstp ppp-options ipv6-peer-interface-id ipv4-addr",
                 "vpn sstp ppp-options ipv4 deny")
    assert result.errors == []
    assert 'vpn sstp ppp-options ipv6-peer-interface-id ipv4-addr: but "ppp-options ipv4" is deny: without ' \
           "an IPv4 address the client keeps the identifier it chose" in result.warnings
    result = run(pki, *V6_ON, "vpn sstp ppp-options ipv6-accept-peer-interface-id")
    assert result.warnings == ["vpn sstp ppp-options ipv6-accept-peer-interface-id: has no effect without "
                               "ipv6-peer-interface-id (the client's own identifier is taken anyway)"]
    result = run(pki, "vpn sstp ppp-options ipv6-interface-id random",
                 "vpn sstp ppp-options ipv6-peer-interface-id calling-sid",
                 "vpn sstp ppp-options ipv6-accept-peer-interface-id")
    assert result.errors == []
    assert result.warnings == ["vpn sstp ppp-options ipv6: deny, so these are unused: ipv6-interface-id, "
                               "ipv6-peer-interface-id, ipv6-accept-peer-interface-id"]
    assert_clean(run(pki, *V6_ON, "vpn sstp ppp-options ipv6-peer-interface-id calling-sid",
                     "vpn sstp ppp-options ipv6-accept-peer-interface-id"))


def test_ipv6_pools_must_not_overlap(pki: dict) -> None:
    result = run(pki, "vpn sstp ppp-options ipv6 allow", "vpn sstp default-ipv6-pool A",
                 "vpn sstp client-ipv6-pool A prefix 2001:db8::/48",
                 "vpn sstp client-ipv6-pool B prefix 2001:db8:0:100::/56")
    assert result.errors == ["vpn sstp client-ipv6-pool A prefix 2001:db8::/48: overlaps "
                             "client-ipv6-pool B prefix 2001:db8:0:100::/56"]


def test_mppe_require_needs_ccp_and_mschap(pki: dict) -> None:
    result = run(pki, "vpn sstp ppp-options mppe require", "vpn sstp ppp-options disable-ccp",
                 "vpn sstp authentication protocols pap")
    assert result.errors == [
        "vpn sstp ppp-options mppe: require needs CCP, but disable-ccp is set",
        "vpn sstp ppp-options mppe: require needs mschap, mschap-v2 or eap in authentication protocols "
        "(MPPE keys)",
    ]
    required = run(pki, "vpn sstp ppp-options mppe require", "vpn sstp authentication protocols mschap-v2")
    assert required.errors == []
    # Windows SSTP clients never negotiate CCP: require is allowed but said out loud.
    assert required.warnings == ["vpn sstp ppp-options mppe: require refuses Windows SSTP clients: they do "
                                 "not negotiate CCP/MPPE over SSTP (the TLS tunnel already encrypts)"]
    assert_clean(run(pki, "vpn sstp ppp-options mppe prefer", "vpn sstp authentication protocols mschap-v2"))


def test_certificate_and_key_must_match(pki: dict) -> None:
    other = rsa_key()
    result = run(pki, f"pki certificate server private key {key_b64(other)}")
    assert result.errors == ["vpn sstp ssl certificate server: the private key does not match the "
                             "certificate"]


def test_expired_and_not_yet_valid_certificates(pki: dict) -> None:
    expired = certificate(pki["server_key"], not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    result = run(pki, f"pki certificate server certificate {der_b64(expired)}")
    assert result.errors == ["vpn sstp ssl certificate server: the certificate expired on "
                             "2026-05-31 12:00:00 UTC"]
    future = certificate(pki["server_key"], not_before=NOW + DAY)
    result = run(pki, f"pki certificate server certificate {der_b64(future)}")
    assert result.errors == [
        "vpn sstp ssl certificate server: the certificate is not valid before 2026-06-02 12:00:00 UTC"]
    # The same certificate becomes valid when the clock moves on.
    assert run(pki, f"pki certificate server certificate {der_b64(future)}", now=NOW + 2 * DAY).errors == []


def test_certificate_expiring_soon_is_a_warning(pki: dict) -> None:
    soon = certificate(pki["server_key"], not_after=NOW + 10 * DAY, issuer_key=pki["ca_key"])
    result = run(pki, f"pki certificate server certificate {der_b64(soon)}")
    assert result.errors == []
    assert result.warnings == ["vpn sstp ssl certificate server: the certificate expires on 2026-06-11"]


def test_rsa_keys_under_2048_bits_are_refused_and_ec_is_accepted(pki: dict) -> None:
    small = rsa_key(1024)
    cert = certificate(small, issuer_key=pki["ca_key"])
    result = run(pki, f"pki certificate server certificate {der_b64(cert)}",
                 f"pki certificate server private key {key_b64(small)}")
    assert result.errors == [
        "vpn sstp ssl certificate server: RSA key of 1024 bits; at least 2048 are required"]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_cert = certificate(ec_key, issuer_key=pki["ca_key"])
    assert_clean(run(pki, f"pki certificate server certificate {der_b64(ec_cert)}",
                     f"pki certificate server private key {key_b64(ec_key)}"))


def test_host_name_must_be_in_the_certificate(pki: dict) -> None:
    result = run(pki, "vpn sstp host-name other.example.com")
    assert result.errors == ["vpn sstp host-name other.example.com: not among the certificate's names "
                             "(vpn.example.com, *.example.org)"]
    assert_clean(run(pki, "vpn sstp host-name gw.example.org"))


def test_host_name_falls_back_to_common_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    no_san = certificate(key, cn="cn.example.net", names=None)
    tree = ConfigTree.from_commands([
        f"set pki certificate s certificate '{der_b64(no_san)}'",
        f"set pki certificate s private key '{key_b64(key)}'",
        f"set pki ca c certificate '{der_b64(no_san)}'",
        "set vpn sstp authentication mode radius",
        "set vpn sstp authentication radius server 192.0.2.1 key k",
        "set vpn sstp host-name cn.example.net", "set vpn sstp gateway-address 192.0.2.254",
        "set vpn sstp ssl certificate s", "set vpn sstp ssl ca-certificate c",
    ])
    assert_clean(verify(model_from_tree(tree), probe=FakeProbe(), now=NOW))


@pytest.mark.parametrize(("host", "pattern", "expected"), [
    ("vpn.example.com", "vpn.example.com", True),
    ("VPN.example.com", "vpn.example.com.", True),
    ("a.example.org", "*.example.org", True),
    ("example.org", "*.example.org", False),
    ("a.b.example.org", "*.example.org", False),
    ("other.example.com", "vpn.example.com", False),
])
def test_name_matching(host: str, pattern: str, expected: bool) -> None:
    assert name_matches(host, pattern) is expected


def test_server_not_issued_by_the_ca_is_a_warning(pki: dict) -> None:
    stranger_key = rsa_key()
    stranger = certificate(stranger_key, cn="Stranger CA", names=None, ca=True)
    result = run(pki, f"pki ca ca certificate {der_b64(stranger)}")
    assert result.errors == []
    assert result.warnings == ["vpn sstp ssl certificate server: is not issued by the configured CA "
                               "(issuer CN=Test CA)"]


def test_certificate_files_through_the_probe(pki: dict) -> None:
    files = {"/etc/vpnd/ca.pem": pem(pki["ca"]), "/etc/vpnd/server.pem": pem(pki["server"]),
             "/etc/vpnd/server.key": key_pem(pki["server_key"])}
    by_file = ("vpn sstp ssl ca-cert-file /etc/vpnd/ca.pem", "vpn sstp ssl cert-file /etc/vpnd/server.pem",
               "vpn sstp ssl key-file /etc/vpnd/server.key")
    removed = ("vpn sstp ssl certificate", "vpn sstp ssl ca-certificate")
    assert_clean(run(pki, *by_file, delete=removed, probe=FakeProbe(files=files)))
    missing = run(pki, *by_file, delete=removed, probe=FakeProbe(files={}))
    assert missing.errors[0] == ("vpn sstp ssl cert-file: cannot read /etc/vpnd/server.pem: "
                                 "No such file or directory")
    encrypted = dict(files, **{"/etc/vpnd/server.key": key_pem(pki["server_key"], b"pw")})
    result = run(pki, *by_file, delete=removed, probe=FakeProbe(files=encrypted))
    assert result.errors == ["vpn sstp ssl key-file: /etc/vpnd/server.key: the key is encrypted; an "
                             "unencrypted key is needed to start unattended"]
    garbage = dict(files, **{"/etc/vpnd/server.pem": b"hello"})
    result = run(pki, *by_file, delete=removed, probe=FakeProbe(files=garbage))
    assert result.errors == ["vpn sstp ssl cert-file: /etc/vpnd/server.pem holds no PEM certificate"]
    half = run(pki, "vpn sstp ssl cert-file /etc/vpnd/server.pem", delete=removed,
               probe=FakeProbe(files=files))
    assert "vpn sstp ssl: key-file is required with cert-file" in half.errors
    both = run(pki, *by_file, probe=FakeProbe(files=files))
    assert "vpn sstp ssl: use either certificate (PKI) or cert-file and key-file, not both" in both.errors


@pytest.mark.parametrize(("mode", "refused"), [(0o600, False), (0o400, False), (0o640, True), (0o644, True),
                                             (0o602, True)])
def test_key_file_readable_by_others_is_refused(pki: dict, mode: int, refused: bool) -> None:
    files = {"/etc/vpnd/ca.pem": pem(pki["ca"]), "/etc/vpnd/server.pem": pem(pki["server"]),
             "/etc/vpnd/server.key": key_pem(pki["server_key"])}
    result = run(pki, "vpn sstp ssl ca-cert-file /etc/vpnd/ca.pem",
                 "vpn sstp ssl cert-file /etc/vpnd/server.pem", "vpn sstp ssl key-file /etc/vpnd/server.key",
                 delete=("vpn sstp ssl certificate", "vpn sstp ssl ca-certificate"),
                 probe=FakeProbe(files=files, modes={"/etc/vpnd/server.key": mode}))
    expected = [f"vpn sstp ssl key-file: /etc/vpnd/server.key is readable or writable by others "
                f"(mode {mode:04o}); chmod 600 /etc/vpnd/server.key"]
    assert result.errors == (expected if refused else [])


def test_system_probe_reads_the_mode(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_bytes(b"k")
    key.chmod(0o640)
    assert SystemProbe().file_mode(str(key)) == 0o640


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_legacy_tls_versions_are_warned_about(pki: dict, version: str) -> None:
    result = run(pki, f"vpn sstp ssl tls-version-min {version}")
    assert result.errors == []
    assert result.warnings == [f"vpn sstp ssl tls-version-min: {version} accepts deprecated TLS versions "
                               "(RFC 8996) and lowers the OpenSSL security level to 0; use it only for "
                               "clients that cannot do TLS 1.2, such as Windows 7"]


def test_limits(pki: dict) -> None:
    assert_clean(run(pki, "vpn sstp limits connection-limit 10/min", "vpn sstp limits burst 20",
                     "vpn sstp limits timeout 300", "vpn sstp limits negotiation-timeout 30",
                     "vpn sstp limits authentication-failure-delay 10", "vpn sstp limits single-session deny",
                     "vpn sstp max-concurrent-sessions 0", "vpn sstp http-error https://example.com/"))
    result = run(pki, "vpn sstp limits burst 20", "vpn sstp limits timeout 300")
    assert result.errors == []
    assert result.warnings == ["vpn sstp limits burst: set but connection-limit is not, so it is unused",
                               "vpn sstp limits timeout: set but connection-limit is not, so it is unused"]
    result = run(pki, "vpn sstp limits negotiation-timeout 20")
    assert result.warnings == ["vpn sstp limits authentication-failure-delay: 30 s is not shorter than "
                               "negotiation-timeout 20 s: throttled attempts time out before they are "
                               "looked at"]
    sha256 = "ab" * 32
    result = run(pki, "vpn sstp limits connection-limit 10/sec",
                 f"vpn sstp tls-offload certificate-hash-sha256 {sha256}")
    assert result.warnings == ["vpn sstp limits connection-limit: with tls-offload and without "
                               "accept-proxy-protocol every client comes from the balancer's address and "
                               "shares one limit"]


def test_login_throttle_limits(pki: dict) -> None:
    assert_clean(run(pki, "vpn sstp limits authentication-failure-window 3600",
                     "vpn sstp limits authentication-spraying-threshold 50",
                     "vpn sstp limits authentication-trusted-time 86400"))
    result = run(pki, "vpn sstp limits authentication-failure-window 30",
                 "vpn sstp limits authentication-trusted-time 20")
    assert result.errors == []
    assert result.warnings == [
        "vpn sstp limits authentication-failure-window: 30 s is not longer than authentication-failure-delay "
        "30 s: failures are forgotten before the longest wait is reached",
        "vpn sstp limits authentication-trusted-time: 20 s is shorter than authentication-failure-window "
        "30 s: a user who logged in a moment ago can wait for another name's failures older than the login"]
    # With the throttle off the other knobs say nothing; 0 turns off spraying checks or trust alone.
    assert_clean(run(pki, "vpn sstp limits authentication-failure-delay 0",
                     "vpn sstp limits authentication-failure-window 10",
                     "vpn sstp limits authentication-spraying-threshold 0",
                     "vpn sstp limits authentication-trusted-time 0"))
    for leaf, value in (("authentication-failure-window", "5"), ("authentication-spraying-threshold", "-1"),
                        ("authentication-trusted-time", "7776001")):
        with pytest.raises(Exception, match="out of range"):
            run(pki, f"vpn sstp limits {leaf} {value}")


def test_ciphers_with_tls13_only_is_a_warning(pki: dict) -> None:
    result = run(pki, "vpn sstp ssl ciphers ECDHE+AESGCM", "vpn sstp ssl tls-version-min 1.3")
    assert result.errors == []
    assert result.warnings == ["vpn sstp ssl ciphers: only applies to TLS 1.2, but tls-version-min is 1.3"]


def test_pki_material_must_decode(pki: dict) -> None:
    not_der = base64.b64encode(b"not a certificate").decode()
    result = run(pki, f"pki ca junk certificate {not_der}", f"pki certificate junk private key {not_der}")
    assert result.errors == ["pki ca junk certificate: not a DER X.509 certificate",
                             "pki certificate junk private key: not an unencrypted DER (PKCS#8) private key"]


# --- interfaces sstpc ---------------------------------------------------------------------------------


def test_sstpc_rules(pki: dict) -> None:
    result = run(pki, "interfaces sstpc sstpc0 disable", base=False)
    assert result.errors == [
        "interfaces sstpc sstpc0 authentication: both username and password are required",
        "interfaces sstpc sstpc0 server: the remote SSTP server is required",
        "interfaces sstpc sstpc0 ssl ca-certificate: required to check the server "
        "(or set verify-server-certificate no)",
    ]
    good = ("interfaces sstpc sstpc0 server vpn.example.com", "interfaces sstpc sstpc0 "
                                                              "authentication username u",
            "interfaces sstpc sstpc0 authentication password p")
    assert_clean(run(pki, *good, f"pki ca ca certificate {der_b64(pki['ca'])}",
                     "interfaces sstpc sstpc0 ssl ca-certificate ca", base=False))
    result = run(pki, *good, "interfaces sstpc sstpc0 ssl ca-certificate nope", base=False)
    assert result.errors == ['interfaces sstpc sstpc0 ssl ca-certificate nope: "pki ca nope" does not exist']
    result = run(pki, *good, "interfaces sstpc sstpc0 verify-server-certificate no",
                 "interfaces sstpc sstpc0 http-proxy port 3128", base=False)
    assert result.errors == ["interfaces sstpc sstpc0 http-proxy address: required when http-proxy is set"]
    assert result.warnings == ["interfaces sstpc sstpc0 verify-server-certificate: no: the server is not "
                               "authenticated"]


def test_example_configurations_verify(pki: dict) -> None:
    files = {"/etc/vpnd/ca.pem": pem(pki["ca"]), "/etc/vpnd/server.pem": pem(pki["server"]),
             "/etc/vpnd/server.key": key_pem(pki["server_key"]), "/etc/vpnd/chain.pem": pem(pki["ca"])}
    pki_lines = [*base_lines(pki)[:3], f"set pki ca intermediate certificate '{der_b64(pki['ca'])}'"]
    host = "set vpn sstp host-name 'vpn.example.com'"
    # VyOS's RADIUS smoketest leaves gateway-address out; vpnd needs it to run (IPCP's server end).
    gateway = "set vpn sstp gateway-address '192.0.2.254'"
    for text in (examples.VYOS_DOCS_EXAMPLE, examples.SMOKETEST_LOCAL, examples.SMOKETEST_RADIUS,
                 examples.VYOS_DOCS_OLD_EXAMPLE):
        lines = text.strip().splitlines()
        if not any("gateway-address" in line for line in lines):
            lines.append(gateway)
        tree = ConfigTree.from_commands([*pki_lines, *lines, host])
        result = verify(model_from_tree(tree), probe=FakeProbe(files=files), now=NOW)
        assert result.errors == [], text
    sstpc = ConfigTree.from_commands([*pki_lines, *examples.SSTPC.strip().splitlines()])
    result = verify(model_from_tree(sstpc), probe=FakeProbe(), now=NOW)
    assert result.errors == [
        "interfaces sstpc sstpc10 authentication: both username and password are required",
        "interfaces sstpc sstpc10 ssl ca-certificate: required to check the server "
        "(or set verify-server-certificate no)",
    ]


# --- the real probe -----------------------------------------------------------------------------------


def test_system_probe_reads_proc(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt uid timeout inode\n"
    (tmp_path / "net" / "tcp").write_text(
        header
        + "   0: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1111 1\n"
        + "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 2222 1\n"
        + "   2: 0100007F:0050 0200007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 3333 1\n")
    for pid, inode, comm, cmdline in ((10, 1111, "nginx", b"nginx\0-g\0"), (20, 2222, "python3",
                                                                            b"python3\0-m\0vpnd\0")):
        proc = tmp_path / str(pid)
        (proc / "fd").mkdir(parents=True)
        os.symlink(f"socket:[{inode}]", proc / "fd" / "3")
        (proc / "comm").write_text(comm + "\n")
        (proc / "cmdline").write_bytes(cmdline)
    probe = SystemProbe(proc=str(tmp_path))
    assert probe.port_in_use(443) == "nginx (pid 10)"
    assert probe.port_in_use(8080) is None  # vpnd itself
    assert probe.port_in_use(80) is None  # not listening
    assert probe.port_in_use(444) is None


def test_now_accepts_epoch_seconds_and_naive_datetimes(pki: dict) -> None:
    expired_at = (NOW + 400 * DAY)
    tree = ConfigTree.from_commands(base_lines(pki))
    for now in (expired_at.timestamp(), expired_at.replace(tzinfo=None)):
        result = verify(model_from_tree(tree), probe=FakeProbe(), now=now)
        assert any("expired" in error for error in result.errors)


# --- configurations written for VyOS ---------------------------------------------------------------


def test_host_form_range_is_taken_as_its_network_with_a_warning(pki: dict) -> None:
    """`range 198.51.100.1/24` (VyOS's ipv4-host validator accepts it): the pool is the network."""
    result = run(pki, "vpn sstp client-ip-pool H range 198.51.100.1/24")
    assert result.errors == []
    assert result.warnings == ["vpn sstp client-ip-pool H range 198.51.100.1/24: host form: the pool is "
                               "the network 198.51.100.0/24 (write that to silence this warning)"]
    tree = ConfigTree.from_commands(base_lines(pki))
    tree.set(["vpn", "sstp", "client-ip-pool", "H", "range", "198.51.100.1/24"])
    tree.set(["vpn", "sstp", "client-ip-pool", "H2", "range", "198.51.100.200-198.51.100.210"])
    # The overlap check sees the whole network, as the running pool does.
    assert verify(model_from_tree(tree), probe=FakeProbe(), now=NOW).errors == [
        "vpn sstp client-ip-pool H range 198.51.100.1/24: overlaps client-ip-pool H2 range "
        "198.51.100.200-198.51.100.210"]
    assert_clean(run(pki, "vpn sstp client-ip-pool H range 198.51.100.0/24"))


@pytest.mark.parametrize(("line", "boot", "advice"), [
    ("vpn sstp snmp master-agent", "vpn {\n sstp {\n  snmp {\n   master-agent\n  }\n }\n}\n", "Prometheus"),
    ("vpn sstp shaper fwmark 10", "vpn {\n sstp {\n  shaper {\n   fwmark 10\n  }\n }\n}\n", "rate-limit"),
    ("vpn sstp authentication radius preallocate-vif",
     "vpn {\n sstp {\n  authentication {\n   radius {\n    preallocate-vif\n   }\n  }\n }\n}\n",
     "NAS-Port-Id"),
])
def test_vyos_nodes_vpnd_does_not_offer_are_refused_with_advice(line: str, boot: str, advice: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ConfigTree.from_commands([f"set {line}"])
    message = str(raised.value)
    assert f"set {line}" in message and "not offered by vpnd" in message and advice in message
    # The same from a config.boot written by VyOS: refused with the line and the advice.
    with pytest.raises(ConfigError) as raised:
        ConfigTree.from_boot_text(boot)
    assert "line 4" in str(raised.value) or "line 5" in str(raised.value)
    assert "not offered by vpnd" in str(raised.value) and advice in str(raised.value)


def test_verify_of_a_certificate_raises_no_library_warning(pki: dict,
                                                           recwarn: pytest.WarningsRecorder) -> None:
    """cryptography deprecates its DSA classes: merely naming them warned on every commit."""
    run(pki)
    assert [str(w.message) for w in recwarn] == []


@pytest.mark.filterwarnings("ignore:DSA is deprecated")  # loading a DSA key warns, by design of the test
def test_dsa_certificate_is_refused(pki: dict) -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa  # noqa: PLC0415 (deprecated, warns)

    key = dsa.generate_private_key(2048)
    server = certificate(key, names=("vpn.example.com",), issuer_key=pki["ca_key"])
    result = run(pki, "vpn sstp ssl certificate dsa",
                 f"pki certificate dsa certificate {der_b64(server)}",
                 f"pki certificate dsa private key {key_b64(key)}")
    assert "vpn sstp ssl certificate dsa: DSA keys are not accepted by SSTP clients; use RSA or ECDSA" \
        in result.errors


def test_extended_scripts_must_be_executable_files(pki: dict) -> None:
    probe = FakeProbe(files={"/config/scripts/up": b"#!/bin/sh\n", "/config/scripts/down": b"#!/bin/sh\n"},
                      modes={"/config/scripts/up": 0o755, "/config/scripts/down": 0o644})
    result = run(pki, "vpn sstp extended-scripts on-up /config/scripts/up",
                 "vpn sstp extended-scripts on-down /config/scripts/down",
                 "vpn sstp extended-scripts on-change /config/scripts/gone", probe=probe)
    assert result.errors == [
        "vpn sstp extended-scripts on-down /config/scripts/down: not executable (mode 0644); "
        "chmod +x /config/scripts/down",
        "vpn sstp extended-scripts on-change /config/scripts/gone: cannot use it: No such file or directory",
    ]


def test_a_vyos_config_with_all_three_loads_and_verifies(pki: dict) -> None:
    """The three kinds VyOS accepts and vpnd used to refuse, together in one configuration:
    a static-ip outside every pool, a host-form range and extended-scripts."""
    scripts = [f"/config/scripts/{hook}" for hook in ("pre", "up", "down", "ch")]
    probe = FakeProbe(files=dict.fromkeys(scripts, b"#!/bin/sh\n"), modes=dict.fromkeys(scripts, 0o755))
    result = run(pki, "vpn sstp authentication local-users username test password test2",
                 "vpn sstp authentication local-users username test static-ip 100.100.100.101",
                 "vpn sstp client-ip-pool SIMPLE-POOL range 192.0.2.1/24",
                 "vpn sstp extended-scripts on-pre-up /config/scripts/pre",
                 "vpn sstp extended-scripts on-up /config/scripts/up",
                 "vpn sstp extended-scripts on-down /config/scripts/down",
                 "vpn sstp extended-scripts on-change /config/scripts/ch", probe=probe)
    assert result.errors == []
    assert [w for w in result.warnings if "192.0.2.1/24" in w] == [
        "vpn sstp client-ip-pool SIMPLE-POOL range 192.0.2.1/24: host form: the pool is the network "
        "192.0.2.0/24 (write that to silence this warning)"]
def test_eap_alone_is_said_out_loud_and_eap_gives_mppe_keys(pki: dict) -> None:
    alone = run(pki, "vpn sstp authentication protocols eap")
    assert alone.errors == []
    assert alone.warnings == [
        "vpn sstp authentication protocols eap: only clients that speak EAP-MSCHAPv2 can log in (sstpc "
        "with pppd, RouterOS and older profiles need mschap-v2 as well)"]
    assert_clean(run(pki, "vpn sstp authentication protocols eap", "vpn sstp authentication protocols pap"))
    required = run(pki, "vpn sstp ppp-options mppe require", "vpn sstp authentication protocols eap")
    assert required.errors == []


def test_eap_tls_needs_eap_and_a_known_ca(pki: dict) -> None:
    missing = run(pki, "vpn sstp authentication eap-tls username common-name")
    assert missing.errors == [
        'vpn sstp authentication eap-tls: needs "eap" in authentication protocols',
        "vpn sstp authentication eap-tls: ca-certificate is required"]
    unknown = run(pki, "vpn sstp authentication protocols eap",
                  "vpn sstp authentication eap-tls ca-certificate nope")
    assert unknown.errors == [
        'vpn sstp authentication eap-tls ca-certificate nope: "pki ca nope" does not exist']
    radius = run(pki, "vpn sstp authentication protocols eap",
                 "vpn sstp authentication eap-tls ca-certificate ca", "vpn sstp authentication mode radius",
                 "vpn sstp authentication radius server 192.0.2.1 key k")
    assert "vpn sstp authentication eap-tls: applies to mode local only; in mode radius it is not used" \
        in radius.warnings
    # Certificates alone: no local user needed, and no EAP-MSCHAPv2-only warning.
    alone = run(pki, "vpn sstp authentication protocols eap",
                "vpn sstp authentication eap-tls ca-certificate ca",
                delete=("vpn sstp authentication local-users",))
    assert alone.errors == [] and alone.warnings == []
