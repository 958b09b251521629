"""The one exception the configuration layer raises for bad input."""

from collections.abc import Iterable


class ConfigError(Exception):
    """One or more problems with a configuration; each message names the path it is about."""

    def __init__(self, messages: str | Iterable[str]) -> None:
        self.messages: list[str] = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("\n".join(self.messages))
