"""The listener's TLS policy (vpnd.server.tls.build_tls), with real handshakes in memory: the
host-name check on SNI, the lowest TLS version, and no renegotiation."""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path

import pytest

from vpnd.config.definitions import Config
from vpnd.server.tls import build_tls, make_self_signed, refused_server_name


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed(tmp_path_factory.mktemp("tls"), "vpn.test")


def server_context(certificate: tuple[Path, Path], **sstp: object) -> ssl.SSLContext:
    cert, key = certificate
    ssl_node = {"cert-file": str(cert), "key-file": str(key), **sstp.pop("ssl", {})}  # type: ignore[dict-item]
    config = Config.model_validate({"vpn": {"sstp": {"ssl": ssl_node, **sstp}}})
    return build_tls(config).context


def handshake(server: ssl.SSLContext, *, sni: str | None, client_max: ssl.TLSVersion | None = None,
              ) -> tuple[str, str, ssl.SSLObject]:
    """Run a handshake between ``server`` and a client in memory; (client outcome, server outcome,
    the server's TLS object). An outcome is the negotiated version or the SSL error's reason."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    if client_max is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.TLSv1
            client.maximum_version = client_max
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ours = client.wrap_bio(to_client, to_server, server_hostname=sni)
    theirs = server.wrap_bio(server_in, server_out, server_side=True)
    outcome = {"client": "", "server": ""}
    for _ in range(10):
        for name, side in (("client", ours), ("server", theirs)):
            if outcome[name]:
                continue
            try:
                side.do_handshake()
                outcome[name] = str(side.version())
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                outcome[name] = str(error.reason)
        server_in.write(to_server.read())
        to_client.write(server_out.read())
        if outcome["client"] and outcome["server"]:
            break
    return outcome["client"], outcome["server"], theirs


def test_without_host_name_any_sni_or_none_is_fine(certificate: tuple[Path, Path]) -> None:
    context = server_context(certificate)
    for sni in ("vpn.test", "other.test", None):
        client, server, tls = handshake(context, sni=sni)
        assert client == server == "TLSv1.3"
        assert refused_server_name(tls) == (False, None)


@pytest.mark.parametrize(("sni", "accepted"), [("vpn.test", True), ("VPN.Test", True),
                                               ("other.test", False), (None, False)])
def test_host_name_must_be_the_sni(certificate: tuple[Path, Path], sni: str | None, accepted: bool) -> None:
    context = server_context(certificate, **{"host-name": "vpn.test"})
    client, server, tls = handshake(context, sni=sni)
    if accepted:
        assert client == server == "TLSv1.3"
        assert refused_server_name(tls) == (False, None)
    else:
        assert client == "TLSV1_UNRECOGNIZED_NAME"  # the fatal alert the client received
        assert refused_server_name(tls) == (True, sni)


@pytest.mark.parametrize(("minimum", "client_max", "outcome"), [
    ("1.2", ssl.TLSVersion.TLSv1, "TLSV1_ALERT_PROTOCOL_VERSION"),
    ("1.2", ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    ("1.3", ssl.TLSVersion.TLSv1_2, "TLSV1_ALERT_PROTOCOL_VERSION"),
    ("1.0", ssl.TLSVersion.TLSv1, "TLSv1"),  # Windows 7 without the TLS 1.2 update
    ("1.1", ssl.TLSVersion.TLSv1_1, "TLSv1.1"),
])
def test_lowest_tls_version(certificate: tuple[Path, Path], minimum: str, client_max: ssl.TLSVersion,
                            outcome: str) -> None:
    context = server_context(certificate, ssl={"tls-version-min": minimum})
    client, _, _ = handshake(context, sni="vpn.test", client_max=client_max)
    assert client == outcome


def test_no_renegotiation_and_no_compression(certificate: tuple[Path, Path]) -> None:
    context = server_context(certificate)
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.options & ssl.OP_NO_COMPRESSION
