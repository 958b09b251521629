"""VyOS-style configuration: the generic tree, the typed model, verify, migrate, diff, schema.

Layering: pydantic and the standard library only; no asyncio, no sockets.
"""

from vpnd.config.errors import ConfigError

__all__ = ["ConfigError"]
