"""The command tree, read from the pydantic model: node kinds, help, value checks, defaults.

Nothing here is written by hand per node: every fact comes from the field's type and metadata
in `vpnd.config.model`, so the model stays the single source of truth.
"""

import enum
import functools
import types
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from vpnd.config.definitions import Config, Ipv6Pool, LegacyIpPool
from vpnd.config.fields import Fmt


class Kind(enum.StrEnum):
    NODE = "node"
    TAG = "tag"
    LEAF = "leaf"
    MULTI = "multi"
    VALUELESS = "valueless"


class InvalidValueError(Exception):
    """A single value does not fit its node; the message starts with 'value'."""


def render_scalar(value: Any) -> str:
    """Canonical CLI text of a validated value."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def _format_number(number: Any) -> str:
    return render_scalar(float(number)) if isinstance(number, float) else str(number)


_TYPE_NAMES: dict[Any, str] = {
    int: "number",
    float: "number",
    str: "text",
    bool: "yes or no",
    SecretStr: "secret text",
    IPv4Address: "IPv4 address",
    IPv6Address: "IPv6 address",
    IPv4Network: "IPv4 prefix",
    IPv6Network: "IPv6 prefix",
}


@dataclass(eq=False)
class ValueType:
    """How one value (leaf value, multi item, or tag name) is checked and described."""

    adapter: TypeAdapter[Any]
    base: Any
    description: str
    enum: list[str] | None = None
    bounds: tuple[Any, Any] | None = None
    pattern: str | None = None

    @property
    def secret(self) -> bool:
        return self.base is SecretStr

    def check(self, raw: str) -> str:
        """Canonical text of `raw`, or InvalidValueError naming what is wrong."""
        try:
            value = self.adapter.validate_python(raw)
        except ValidationError as exc:
            raise InvalidValueError(self._message(raw, exc.errors()[0])) from None
        return render_scalar(value)

    def _message(self, raw: str, error: Any) -> str:
        kind = error.get("type", "")
        shown = "(hidden)" if self.secret else raw
        if self.bounds and (kind.startswith(("greater_than", "less_than"))):
            lo, hi = self.bounds
            if lo is not None and hi is not None:
                return f"value {shown} out of range {_format_number(lo)}-{_format_number(hi)}"
            if lo is not None:
                return f"value {shown} must be at least {_format_number(lo)}"
            return f"value {shown} must be at most {_format_number(hi)}"
        if kind == "literal_error" and self.enum:
            return f'value "{shown}" is not one of: {", ".join(self.enum)}'
        if kind == "value_error":
            reason = str(error.get("ctx", {}).get("error", error.get("msg", "")))
            return f'value "{shown}" is not a valid {self.description}: {reason}'
        if kind in ("string_too_long", "too_long"):
            limit = error.get("ctx", {}).get("max_length")
            return f'value "{shown}" is too long (at most {limit} characters)'
        if kind in ("string_too_short", "too_short"):
            return f'value "{shown}" is too short'
        return f'value "{shown}" is not a valid {self.description}'

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"format": self.description}
        if self.enum:
            info["values"] = list(self.enum)
        if self.bounds:
            info["range"] = [self.bounds[0], self.bounds[1]]
        if self.pattern:
            info["pattern"] = self.pattern
        if self.secret:
            info["secret"] = True
        return info


@dataclass(eq=False)
class SchemaNode:
    name: str
    kind: Kind
    help: str
    field_name: str = ""
    model: type[BaseModel] | None = None
    children: dict[str, "SchemaNode"] = field(default_factory=dict)
    value: ValueType | None = None
    default: Any = None
    completion: str | None = None
    legacy: "SchemaNode | None" = None

    @property
    def secret(self) -> bool:
        return self.value is not None and self.value.secret and self.kind in (Kind.LEAF, Kind.MULTI)

    def child_names(self) -> list[str]:
        return sorted(self.children)


def _strip(annotation: Any) -> tuple[Any, list[Any], bool]:
    """Remove Annotated and Optional layers: (base type, metadata, optional)."""
    metadata: list[Any] = []
    optional = False
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            args = get_args(annotation)
            annotation = args[0]
            metadata.extend(args[1:])
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            optional = optional or len(members) < len(get_args(annotation))
            if len(members) != 1:
                raise TypeError(f"unsupported union {annotation!r}")
            annotation = members[0]
        else:
            return annotation, metadata, optional


def _bounds(metadata: list[Any]) -> tuple[Any, Any] | None:
    lo = hi = None
    for item in metadata:
        for attr in ("ge", "gt"):
            if getattr(item, attr, None) is not None:
                lo = getattr(item, attr)
        for attr in ("le", "lt"):
            if getattr(item, attr, None) is not None:
                hi = getattr(item, attr)
    return None if lo is None and hi is None else (lo, hi)


def _value_type(base: Any, metadata: list[Any]) -> ValueType:
    enum_values = None
    if get_origin(base) is Literal:
        enum_values = [str(arg) for arg in get_args(base)]
        description = "one of: " + ", ".join(enum_values)
    else:
        description = _TYPE_NAMES.get(base, getattr(base, "__name__", str(base)))
    for item in metadata:
        if isinstance(item, Fmt):
            description = item.text
    pattern = next((item.pattern for item in metadata if getattr(item, "pattern", None)), None)
    bounds = _bounds(metadata)
    if bounds and base in (int, float) and bounds[0] is not None and bounds[1] is not None:
        description = f"number {_format_number(bounds[0])}-{_format_number(bounds[1])}"
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[base, *metadata] if metadata else base)
    return ValueType(adapter, base, description, enum_values, bounds, pattern)


def _field_node(name: str, info: FieldInfo) -> SchemaNode:
    base, metadata, _optional = _strip(info.annotation)
    metadata = metadata + list(info.metadata)
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    cli_name = name.replace("_", "-")
    help_text = info.description or ""
    completion = extra.get("x-completion")
    default = None if info.default is PydanticUndefined else info.default
    if info.default_factory is not None and get_origin(base) is list:
        default = info.default_factory()  # type: ignore[call-arg]
    node = SchemaNode(cli_name, Kind.LEAF, help_text, name,
                      completion=str(completion) if completion else None, default=default)
    if base is bool and extra.get("x-kind") != "leaf":
        node.kind = Kind.VALUELESS
        node.default = None
    elif get_origin(base) is list:
        node.kind = Kind.MULTI
        item, item_meta, _ = _strip(get_args(base)[0])
        node.value = _value_type(item, item_meta)
        node.default = [render_scalar(v) for v in default] if default else None
    elif get_origin(base) is dict:
        node.kind = Kind.TAG
        key, key_meta, _ = _strip(get_args(base)[0])
        entry, _, _ = _strip(get_args(base)[1])
        node.value = _value_type(key, key_meta)
        node.model = entry
        node.children = _model_children(entry)
        node.default = None
    elif isinstance(base, type) and issubclass(base, BaseModel):
        node.kind = Kind.NODE
        node.model = base
        node.children = _model_children(base)
        node.default = None
    else:
        node.value = _value_type(base, metadata)
        node.default = None if default is None else render_scalar(default)
    return node


def _model_children(model: type[BaseModel]) -> dict[str, SchemaNode]:
    return {n.name: n for n in (_field_node(name, info) for name, info in model.model_fields.items())}


# Old syntax accepted under these tag nodes: a plain node with the children of the model.
_LEGACY_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    ("vpn", "sstp", "client-ip-pool"): LegacyIpPool,
    ("vpn", "sstp", "client-ipv6-pool"): Ipv6Pool,
}


@functools.cache
def schema_root() -> SchemaNode:
    root = SchemaNode("", Kind.NODE, "Configuration", model=Config, children=_model_children(Config))
    for path, model in _LEGACY_MODELS.items():
        node = find(root, path)
        node.legacy = SchemaNode(node.name, Kind.NODE, node.help + " (old syntax)", node.field_name,
                                 model=model, children=_model_children(model))
    return root


def find(root: SchemaNode, path: tuple[str, ...] | list[str]) -> SchemaNode:
    """Schema node of a path of node names (tag values are not part of `path`)."""
    node = root
    for name in path:
        node = node.children[name]
    return node
