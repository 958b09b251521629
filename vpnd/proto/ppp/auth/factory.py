"""Build the authenticator or peer object for a negotiated authentication method."""

from __future__ import annotations

import os
from collections.abc import Callable

from vpnd.proto.eap.client import EapClient
from vpnd.proto.eap.relay import EapRelayServer
from vpnd.proto.eap.server import EapServer
from vpnd.proto.eap.tls_server import EapTlsServerSettings
from vpnd.proto.ppp.auth.chap import ChapClient, ChapServer
from vpnd.proto.ppp.auth.pap import PapClient, PapServer
from vpnd.proto.ppp.auth.types import AuthMethod, ClientAuth, ServerAuth

__all__ = ["make_client_auth", "make_server_auth"]


def make_server_auth(
    method: AuthMethod, *, name: str = "vpnd", random_bytes: Callable[[int], bytes] = os.urandom,
    eap_relay: bool = False, eap_tls: EapTlsServerSettings | None = None,
) -> ServerAuth:
    """Authenticator role; ``name`` is the CHAP (and EAP-MSCHAPv2) Name sent in Challenges.
    ``eap_relay``: EAP methods run in the backend (RADIUS pass-through), not here."""
    if method is AuthMethod.PAP:
        return PapServer()
    if method is AuthMethod.EAP:
        if eap_relay:
            return EapRelayServer(random_bytes=random_bytes)
        return EapServer(name=name, random_bytes=random_bytes, tls=eap_tls)
    return ChapServer(method, name=name, random_bytes=random_bytes)


def make_client_auth(
    method: AuthMethod,
    *,
    username: str,
    password: str,
    random_bytes: Callable[[int], bytes] = os.urandom,
    eap_ca: bytes | None = None,
    eap_certificate: bytes | None = None,
    eap_key: bytes | None = None,
) -> ClientAuth:
    """Peer role authenticating as ``username``; EAP speaks PEAP only with ``eap_ca``, and
    EAP-TLS with ``eap_ca`` and a certificate and key."""
    if method is AuthMethod.PAP:
        # Randomness only picks the first Identifier; CHAP peers need it for MS-CHAPv2 challenges.
        return PapClient(username=username, password=password, first_identifier=random_bytes(1)[0])
    if method is AuthMethod.EAP:
        return EapClient(username=username, password=password, random_bytes=random_bytes, eap_ca=eap_ca,
                         certificate=eap_certificate, key=eap_key)
    return ChapClient(method, username=username, password=password, random_bytes=random_bytes)
