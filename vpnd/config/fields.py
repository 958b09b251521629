"""Helpers that attach CLI facts (help, completion, format) to pydantic fields.

The model is the single source of syntax: `vpnd.config.nodes` reads these back to build the
command tree, so a field declared here is at once typed, validated, documented and completable.
"""

from typing import Any

from pydantic import Field
from pydantic_core import PydanticUndefined


class Fmt:
    """Human name of a value format, used in help and in error messages ("IPv4 address")."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Fmt({self.text!r})"


def cli(
    default: Any = PydanticUndefined,
    help: str = "",
    *,
    completion: str | None = None,
    leaf: bool = False,
    **constraints: Any,
) -> Any:
    """A model field with CLI metadata.

    `completion` is a config path whose tag values complete this leaf ("pki certificate").
    `leaf=True` makes a bool a yes/no leaf instead of a valueless leaf (presence = true).
    """
    extra: dict[str, Any] = {}
    if completion:
        extra["x-completion"] = completion
    if leaf:
        extra["x-kind"] = "leaf"
    return Field(default, description=help, json_schema_extra=extra or None, **constraints)
