"""Old syntax rewritten into the current one, as VyOS's sstp migration scripts 4→5 and 5→6 do.

4→5: `client-ip-pool subnet X` becomes pool `default-range-pool` with `range X`, and
     `default-pool default-range-pool` unless a default pool is already set.
5→6: the unnamed `client-ipv6-pool prefix X mask N` / `delegate X delegation-prefix N`
     becomes pool `ipv6-pool`, and `default-ipv6-pool ipv6-pool` unless already set.
"""

from collections.abc import Callable

from vpnd.config.node import Node, show_path
from vpnd.config.nodes import Kind

IPV4_POOL = "default-range-pool"
IPV6_POOL = "ipv6-pool"
_SSTP = ("vpn", "sstp")


def migrate(root: Node) -> list[str]:
    """Rewrite old syntax in place under the config's ``root`` node; returns one line per change
    made (empty when none)."""
    sstp = root
    for name in _SSTP:
        found = sstp.children.get(name)
        if found is None:
            return []
        sstp = found
    notes: list[str] = []
    for name in _MIGRATIONS:
        child = sstp.children.get(name)
        if child is not None and child.legacy:
            notes += merge_legacy(sstp, name)
    return notes


def merge_legacy(parent: Node, name: str, current: Node | None = None) -> list[str]:
    """Replace the old-syntax node `parent.children[name]` by the current form.

    `current` is an existing tag node in the current form to merge into (when both were mixed).
    """
    legacy = parent.children.pop(name)
    tag = current if current is not None else Node(Kind.TAG)
    parent.children[name] = tag
    notes = _MIGRATIONS[name](parent, legacy, tag)
    if not tag.children:
        del parent.children[name]
    return notes


def _set_default(parent: Node, leaf: str, pool: str) -> list[str]:
    if leaf in parent.children:
        return []
    parent.children[leaf] = Node(Kind.LEAF, values=[pool])
    return [f"{show_path([*_SSTP, leaf, pool])} (added)"]


def _ipv4_pool(parent: Node, legacy: Node, tag: Node) -> list[str]:
    subnets = legacy.children.get("subnet")
    if subnets is None or not subnets.values:
        return []
    entry = tag.children.setdefault(IPV4_POOL, Node(Kind.NODE))
    ranges = entry.children.setdefault("range", Node(Kind.MULTI))
    notes = []
    for subnet in subnets.values:
        if subnet not in ranges.values:
            ranges.values.append(subnet)
        notes.append(f"{show_path([*_SSTP, 'client-ip-pool', 'subnet', subnet])} -> "
                     f"{show_path([*_SSTP, 'client-ip-pool', IPV4_POOL, 'range', subnet])}")
    return notes + _set_default(parent, "default-pool", IPV4_POOL)


def _ipv6_pool(parent: Node, legacy: Node, tag: Node) -> list[str]:
    if not legacy.children:
        return []
    entry = tag.children.setdefault(IPV6_POOL, Node(Kind.NODE))
    notes = []
    for kind in ("prefix", "delegate"):
        old = legacy.children.get(kind)
        if old is None:
            continue
        new = entry.children.setdefault(kind, Node(Kind.TAG))
        for prefix, options in old.children.items():
            new.children[prefix] = options
            notes.append(f"{show_path([*_SSTP, 'client-ipv6-pool', kind, prefix])} -> "
                         f"{show_path([*_SSTP, 'client-ipv6-pool', IPV6_POOL, kind, prefix])}")
    return notes + _set_default(parent, "default-ipv6-pool", IPV6_POOL)


_MIGRATIONS: dict[str, Callable[[Node, Node, Node], list[str]]] = {
    "client-ip-pool": _ipv4_pool,
    "client-ipv6-pool": _ipv6_pool,
}
