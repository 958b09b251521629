"""What changed between two configurations, for the apply step: `diff(old, new) -> [Change]`.

Values are compared as in effect (defaults included), so writing a default explicitly is
not a change. A tag entry or an optional node that appears or disappears is one Change at
its own path; inside entries present on both sides, leaves are compared one by one.
"""

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, SecretStr

from vpnd.config.definitions import Config
from vpnd.config.node import show_path
from vpnd.config.nodes import Kind, SchemaNode, render_scalar, schema_root

ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class Change:
    path: tuple[str, ...]
    kind: ChangeKind
    old: Any = None
    new: Any = None
    secret: bool = False

    def is_under(self, *prefix: str) -> bool:
        return self.path[: len(prefix)] == prefix

    def __str__(self) -> str:
        text = f"{self.kind} {show_path(self.path)}"
        if self.kind == "changed" and not self.secret:
            text += f": {_show(self.old)} -> {_show(self.new)}"
        return text


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(render_scalar(v) for v in value) + "]"
    return render_scalar(value)


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def diff(old: Config | None, new: Config) -> list[Change]:
    """Changes from `old` (None: nothing configured yet) to `new`, in command-tree order."""
    changes: list[Change] = []
    _diff(schema_root(), old if old is not None else Config(), new, (), changes)
    return changes


def _diff(schema: SchemaNode, old: BaseModel, new: BaseModel, path: tuple[str, ...],
          out: list[Change]) -> None:
    for name, child in schema.children.items():
        before, after = getattr(old, child.field_name), getattr(new, child.field_name)
        here = (*path, name)
        if child.kind is Kind.NODE:
            if before is None and after is None:
                continue
            if before is None:
                out.append(Change(here, "added"))
            elif after is None:
                out.append(Change(here, "removed"))
            else:
                _diff(child, before, after, here, out)
        elif child.kind is Kind.TAG:
            old_keys = {render_scalar(k): v for k, v in before.items()}
            new_keys = {render_scalar(k): v for k, v in after.items()}
            for key in old_keys:
                if key not in new_keys:
                    out.append(Change((*here, key), "removed"))
            for key, entry in new_keys.items():
                if key not in old_keys:
                    out.append(Change((*here, key), "added"))
                else:
                    _diff(child, old_keys[key], entry, (*here, key), out)
        elif child.kind is Kind.VALUELESS:
            if before != after:
                out.append(Change(here, "added" if after else "removed"))
        elif _plain(before) != _plain(after):
            empty_before = before is None or before == []
            empty_after = after is None or after == []
            kind: ChangeKind = "added" if empty_before else "removed" if empty_after else "changed"
            out.append(Change(here, kind, before, after, child.secret))
