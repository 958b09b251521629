"""Pure verifiers for locally stored credentials: clear-text password or NT hash.

Both answer an ``AuthRequest`` with an ``AuthDecision``; comparisons run in constant time.
Unknown users and wrong passwords get the same message so the peer cannot tell them apart.
"""

from __future__ import annotations

import hmac

from vpnd.proto.crypto.mppe import mschapv1_mppe_keys, mschapv2_mppe_keys
from vpnd.proto.crypto.mschap import (
    chap_md5_response,
    mschapv1_nt_response,
    mschapv2_authenticator_response,
    mschapv2_nt_response,
    nt_password_hash,
)
from vpnd.proto.ppp.auth.types import (
    AuthDecision,
    AuthRequest,
    ChapMd5Request,
    EapRelayRequest,
    MsChapV1Request,
    MsChapV2Request,
    PapRequest,
)

__all__ = ["FAILURE_MESSAGE", "SUCCESS_MESSAGE", "decide_with_nt_hash", "decide_with_password"]

SUCCESS_MESSAGE = "Access granted"
FAILURE_MESSAGE = "Authentication failed"


def _reject(message: str = FAILURE_MESSAGE) -> AuthDecision:
    return AuthDecision(accepted=False, message=message, error_code=691)


def decide_with_password(request: AuthRequest, password: str | None) -> AuthDecision:
    """Check any request against a clear-text password; ``None`` means the user is unknown."""
    if password is None:
        return _reject()
    if isinstance(request, PapRequest):
        if hmac.compare_digest(request.password, password.encode("utf-8")):
            return AuthDecision(accepted=True, message=SUCCESS_MESSAGE)
        return _reject()
    if isinstance(request, ChapMd5Request):
        expected = chap_md5_response(request.identifier, password.encode("utf-8"), request.challenge)
        if hmac.compare_digest(request.response, expected):
            return AuthDecision(accepted=True, message=SUCCESS_MESSAGE)
        return _reject()
    return decide_with_nt_hash(request, nt_password_hash(password))


def decide_with_nt_hash(request: AuthRequest, nt_hash: bytes | None) -> AuthDecision:
    """Check an MS-CHAP request against a stored NT hash (MD4 of the UTF-16LE password).

    PAP and CHAP-MD5 need the clear-text password, so they are rejected here.
    """
    if isinstance(request, EapRelayRequest):
        return _reject("EAP pass-through needs a RADIUS server")
    if isinstance(request, PapRequest | ChapMd5Request):
        kind = "PAP" if isinstance(request, PapRequest) else "CHAP-MD5"
        return _reject(f"{kind} needs a clear-text password, but only an NT hash is stored")
    if nt_hash is None:
        return _reject()
    if len(nt_hash) != 16:
        return _reject("stored NT hash is not 16 bytes")
    if isinstance(request, MsChapV1Request):
        return _decide_mschap_v1(request, nt_hash)
    return _decide_mschap_v2(request, nt_hash)


def _decide_mschap_v1(request: MsChapV1Request, nt_hash: bytes) -> AuthDecision:
    if len(request.challenge) != 8 or len(request.nt_response) != 24:
        return _reject()
    if not request.use_nt:
        # LAN Manager responses are too weak to accept (and need the clear-text password).
        return _reject("LAN Manager responses are not accepted")
    expected = mschapv1_nt_response(request.challenge, nt_hash)
    if not hmac.compare_digest(request.nt_response, expected):
        return _reject()
    return AuthDecision(
        accepted=True,
        message=SUCCESS_MESSAGE,
        keys=mschapv1_mppe_keys(nt_hash, request.challenge),
    )


def _decide_mschap_v2(request: MsChapV2Request, nt_hash: bytes) -> AuthDecision:
    if (
        len(request.authenticator_challenge) != 16
        or len(request.peer_challenge) != 16
        or len(request.nt_response) != 24
    ):
        return _reject()
    expected = mschapv2_nt_response(
        request.authenticator_challenge, request.peer_challenge, request.username, nt_hash
    )
    if not hmac.compare_digest(request.nt_response, expected):
        return _reject()
    authenticator_response = mschapv2_authenticator_response(
        nt_hash,
        request.nt_response,
        request.peer_challenge,
        request.authenticator_challenge,
        request.username,
    )
    return AuthDecision(
        accepted=True,
        message=SUCCESS_MESSAGE,
        authenticator_response=authenticator_response,
        keys=mschapv2_mppe_keys(nt_hash, request.nt_response, is_server=True),
    )
