"""`vpnd demo`: the whole SSTP conversation between our server and client objects, in memory.

Shows what the protocol core does without TLS, sockets or TUN devices: every SSTP message and
PPP frame in order, the events each side reports, and IPv4 packets carried both ways.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable
from ipaddress import IPv4Address

from vpnd.paths import Paths
from vpnd.proto.ppp.auth.types import AuthMethod
from vpnd.proto.ppp.auth.verify import decide_with_password
from vpnd.proto.ppp.ipcp import Ipv4Settings
from vpnd.proto.ppp.lcp import LcpSettings
from vpnd.proto.ppp.link import LinkSettings
from vpnd.proto.session import (
    AuthRequested,
    ClientSession,
    ClientSessionSettings,
    Ipv4AddressNeeded,
    ServerSession,
    ServerSessionSettings,
)
from vpnd.proto.sstp.packets import HashProtocol
from vpnd.proto.trace import describe_packets

DEMO_CERT = b"demo certificate (no TLS in this demonstration)"
GATEWAY, CLIENT = IPv4Address("10.255.0.1"), IPv4Address("10.255.0.2")


def _event_text(event: object) -> str:
    """The event's name and its fields, with byte strings shown as hex."""
    parts = []
    for key in getattr(event, "__slots__", ()):
        value = getattr(event, key)
        if isinstance(value, bytes):
            value = value.hex()
        elif hasattr(value, "__slots__") and not isinstance(value, (str, int, IPv4Address)):
            value = type(value).__name__
        if value not in (None, "", {}, ()):
            parts.append(f"{key}={value}")
    return f"{type(event).__name__} " + " ".join(parts)


def run_demo(method: AuthMethod, *, ipv6: bool = True, write: Callable[[str], None] = print) -> bool:
    """Run one conversation; returns True when IPv4 crossed both ways and the teardown was clean."""
    password = "demo-" + os.urandom(4).hex()
    hashes = {proto: hashlib.new(proto.name.lower(), DEMO_CERT).digest() for proto in HashProtocol}
    link = LinkSettings(lcp=LcpSettings(auth_methods=(method,)), ipv6_enabled=ipv6)
    server = ServerSession(ServerSessionSettings(cert_hashes=hashes, link=link), 0.0,
                           now_wallclock=time.time())
    client = ClientSession(ClientSessionSettings(host="vpn.example.net", username="demo", password=password,
                                                 link=link))
    now = 0.0

    def pump() -> None:
        for _ in range(100):
            moved = False
            for sender, receiver, arrow in ((client, server, "client -> server"),
                                            (server, client, "server -> client")):
                data = sender.data_to_send()
                if not data:
                    continue
                moved = True
                if receiver.channel is None:  # still in the HTTP step
                    first_line = data.split(b"\r\n", 1)[0].decode("ascii", "replace")
                    write(f"  {arrow}  HTTP {first_line}")
                else:
                    for line in describe_packets(data):
                        write(f"  {arrow}  {line}")
                receiver.receive_data(data, now)
            for name, session in (("server", server), ("client", client)):
                while (event := session.next_event()) is not None:
                    moved = True
                    write(f"      [{name}] {_event_text(event)}")
                    if isinstance(event, AuthRequested):
                        server.decide(decide_with_password(event.request, password), now)
                    elif isinstance(event, Ipv4AddressNeeded):
                        server.assign_ipv4(Ipv4Settings(GATEWAY, CLIENT, (GATEWAY,)), now)
            if not moved:
                return

    write(f"== vpnd demo: {method.value}, server and client objects back to back (no TLS, no TUN)")
    client.start(hashes, now)
    pump()
    ping = bytes([0x45]) + bytes(83)
    sent_up = client.send_ip_packets([ping] * 3)
    sent_down = server.send_ip_packets([ping] * 2)
    pump()
    write(f"== IPv4: client sent {sent_up}, server received {server.rx_packets}; "
          f"server sent {sent_down}, client received {client.rx_packets}")
    client.close(now, "user hang-up")
    pump()
    now += 2.0
    server.handle_timer(now)
    pump()
    carried = server.rx_packets == sent_up == 3 and client.rx_packets == sent_down == 2
    ok = carried and server.closed and client.closed
    verdict = "OK" if ok else "FAILED"
    write(f"== closed: server={server.close_reason!r} client={client.close_reason!r} -> {verdict}")
    return ok


def register(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("demo", help="run the whole SSTP/PPP conversation in memory and print it")
    parser.add_argument("--auth", choices=[m.value for m in AuthMethod], action="append",
                        help="authentication method(s) to show (default: all four)")
    parser.add_argument("--no-ipv6", action="store_true", help="leave IPV6CP out")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace, paths: Paths) -> int:
    methods = [AuthMethod(m) for m in args.auth] if args.auth else list(AuthMethod)
    results = [run_demo(method, ipv6=not args.no_ipv6) for method in methods]
    return 0 if all(results) else 1
