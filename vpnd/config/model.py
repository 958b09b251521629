"""The typed model (classes in `vpnd.config.definitions`) and its conversion from/to the tree.

`model_from_tree` reads what `set` built; `tree_from_model` writes back exactly what was set
(fields left at their defaults stay out), so set lines → model → set lines is the identity.
"""

from typing import Any

from pydantic import BaseModel, ValidationError

from vpnd.config.definitions import (
    ALL_AUTH_PROTOCOLS,
    Authentication,
    Config,
    DynamicAuthor,
    HttpProxy,
    Interfaces,
    IpPool,
    Ipv6Delegate,
    Ipv6Pool,
    Ipv6Prefix,
    Limits,
    LocalUser,
    LocalUsers,
    Log,
    Pki,
    PkiCa,
    PkiCertificate,
    PkiPrivate,
    PppOptions,
    Radius,
    RadiusRateLimit,
    RadiusServer,
    ServerSsl,
    SstpcAuthentication,
    SstpcInterface,
    SstpcSsl,
    SstpServer,
    UserRateLimit,
    Vpn,
    range_bounds,
)
from vpnd.config.errors import ConfigError
from vpnd.config.migrate import migrate
from vpnd.config.node import Node, show_path
from vpnd.config.nodes import Kind, SchemaNode, render_scalar, schema_root
from vpnd.config.tree import ConfigTree

__all__ = [
    "ALL_AUTH_PROTOCOLS",
    "Authentication",
    "Config",
    "ConfigError",
    "DynamicAuthor",
    "HttpProxy",
    "Interfaces",
    "IpPool",
    "Ipv6Delegate",
    "Ipv6Pool",
    "Ipv6Prefix",
    "Limits",
    "LocalUser",
    "LocalUsers",
    "Log",
    "Pki",
    "PkiCa",
    "PkiCertificate",
    "PkiPrivate",
    "PppOptions",
    "Radius",
    "RadiusRateLimit",
    "RadiusServer",
    "ServerSsl",
    "SstpServer",
    "SstpcAuthentication",
    "SstpcInterface",
    "SstpcSsl",
    "UserRateLimit",
    "Vpn",
    "model_from_tree",
    "range_bounds",
    "tree_from_model",
]


def _has_legacy(node: Node) -> bool:
    return node.legacy or any(_has_legacy(child) for child in node.children.values())


def _to_data(node: Node) -> Any:
    if node.kind is Kind.LEAF:
        return node.values[0] if node.values else None
    if node.kind is Kind.MULTI:
        return list(node.values)
    if node.kind is Kind.VALUELESS:
        return True
    return {name: _to_data(child) for name, child in node.children.items()}


def _error_message(error: Any) -> str:
    path = show_path(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "invalid"))
    return f"{path}: {message}" if path else message


def model_from_tree(tree: ConfigTree) -> Config:
    """The typed model of `tree`; old syntax is migrated on a copy first. Raises ConfigError."""
    if _has_legacy(tree.root):
        tree = tree.copy()
        migrate(tree.root)
    try:
        return Config.model_validate(_to_data(tree.root))
    except ValidationError as exc:
        raise ConfigError([_error_message(error) for error in exc.errors()]) from None


def tree_from_model(config: Config) -> ConfigTree:
    """The tree holding what was set in `config`; defaults that were never set stay out."""
    tree = ConfigTree()
    _fill(tree.root, config, schema_root())
    return tree


def _fill(node: Node, model: BaseModel, schema: SchemaNode) -> None:
    for name, child in schema.children.items():
        value = getattr(model, child.field_name)
        explicit = child.field_name in model.model_fields_set
        if child.kind is Kind.NODE:
            if value is None:
                continue
            sub = Node(Kind.NODE)
            _fill(sub, value, child)
            if sub.children or explicit:
                node.children[name] = sub
        elif child.kind is Kind.TAG:
            if not value:
                continue
            tag = Node(Kind.TAG)
            for key, entry_model in value.items():
                entry = Node(Kind.NODE)
                _fill(entry, entry_model, child)
                tag.children[render_scalar(key)] = entry
            node.children[name] = tag
        elif child.kind is Kind.VALUELESS:
            if value:
                node.children[name] = Node(Kind.VALUELESS)
        elif child.kind is Kind.LEAF:
            if value is None:
                continue
            text = render_scalar(value)
            if explicit or text != child.default:
                node.children[name] = Node(Kind.LEAF, values=[text], secret=child.secret)
        else:
            texts = list(dict.fromkeys(render_scalar(item) for item in value or ()))
            if texts and (explicit or texts != child.default):
                node.children[name] = Node(Kind.MULTI, values=texts, secret=child.secret)
