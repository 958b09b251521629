"""The one exception type the protocol core raises for bad input."""


class ProtocolError(Exception):
    """Bytes that cannot be decoded or a message that is not acceptable.

    Decoders raise it; state machines catch it and answer the way the protocol says
    (NAK, Abort, Protocol-Reject, silent drop). Nothing else may escape from the core
    when it is fed hostile bytes.
    """
