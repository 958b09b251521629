"""One node of the generic configuration tree, and how paths are shown in messages."""

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from vpnd.config.nodes import Kind

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(eq=True)
class Node:
    """Node, tag node (children = entries by tag value), leaf, multi-value leaf or valueless leaf."""

    kind: Kind
    children: dict[str, "Node"] = field(default_factory=dict)
    values: list[str] = field(default_factory=list)
    legacy: bool = False
    secret: bool = False


def natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort key putting sstpc2 before sstpc10."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part]


def show_token(token: str) -> str:
    if CONTROL_CHARACTERS.search(token):
        return repr(token)
    return shlex.quote(token)


def show_path(tokens: Iterable[str]) -> str:
    return " ".join(show_token(t) for t in tokens)
