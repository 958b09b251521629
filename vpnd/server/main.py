"""`vpnd run`: load the saved config (or create the embedded default), serve until told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import secrets
import signal
import socket
import sys

from vpnd.config.definitions import Config
from vpnd.config.errors import ConfigError
from vpnd.config.model import tree_from_model
from vpnd.net.link import host_addresses
from vpnd.paths import Paths, write_atomic
from vpnd.server.control import ControlServer
from vpnd.server.daemon import Daemon
from vpnd.server.running import plan_text
from vpnd.server.tls import make_self_signed

log = logging.getLogger("vpnd")

DEFAULT_POOL = "10.254.0.0/24"
DEFAULT_GATEWAY = "10.254.255.1"
DEMO_USER = "demo"


def embedded_default(paths: Paths) -> tuple[Config, str]:
    """A working service: self-signed certificate, one demo user, a private pool."""
    host = socket.gethostname() or "vpnd.local"
    paths.tls_dir.mkdir(parents=True, exist_ok=True)
    # The host's addresses too: `vpnd client --server <address> --ca server.pem` must verify.
    cert, key = make_self_signed(paths.tls_dir, host, host_addresses())
    password = secrets.token_urlsafe(12)
    config = Config.model_validate({
        "vpn": {"sstp": {
            "authentication": {
                "mode": "local",
                "protocols": ["mschap-v2", "pap"],
                "local-users": {"username": {DEMO_USER: {"password": password}}},
            },
            "client-ip-pool": {"default": {"range": [DEFAULT_POOL]}},
            "default-pool": "default",
            "gateway-address": DEFAULT_GATEWAY,
            "name-server": [DEFAULT_GATEWAY],
            # A self-signed certificate is its own CA (verify requires one, as VyOS does).
            "ssl": {"cert-file": str(cert), "key-file": str(key), "ca-cert-file": str(cert)},
            "description": "embedded default written by vpnd on first start",
        }},
    })
    return config, password


def load_or_create(paths: Paths) -> str:
    """The saved configuration's text; on first start, the embedded default's, saved."""
    if paths.saved_config.exists():
        return paths.saved_config.read_text()
    config, password = embedded_default(paths)
    boot_text = tree_from_model(config).to_boot_text(secrets=True)
    write_atomic(paths.saved_config, boot_text, mode=0o600)
    sstp = config.vpn.sstp
    assert sstp is not None
    print(
        f"vpnd: no configuration in {paths.config_dir}; wrote the embedded default to {paths.saved_config}\n"
        f"  demo user: {DEMO_USER}  password: {password}   (shown once; change it with `vpnd configure`)\n"
        f"  pool {DEFAULT_POOL}, gateway {DEFAULT_GATEWAY}, self-signed certificate in {paths.tls_dir}\n"
        f"  dial it:  vpnd client --server <this host> --port {sstp.port} --user {DEMO_USER} "
        f"--password '{password}' --no-verify\n",
        flush=True,
    )
    return boot_text


async def serve(paths: Paths, *, listen_host: str, port: int | None) -> int:
    try:
        # Off the loop: the first start's netlink dump (host addresses) must not run on it, and
        # pyroute2 cannot open its socket under uvloop's loop anyway.
        boot_text = await asyncio.to_thread(load_or_create, paths)
        plan = plan_text(boot_text, port=port)
    except (OSError, UnicodeDecodeError) as error:
        log.error("cannot start: cannot read %s: %s", paths.saved_config, error)
        return 1
    except ConfigError as error:
        # The same messages `vpnd configure` gives when this configuration is committed.
        log.error("cannot start: %s is refused:\n  %s", paths.saved_config, "\n  ".join(error.messages))
        return 1
    try:
        daemon = Daemon(plan, listen_host=listen_host, state_dir=paths.state_dir)
        await daemon.start()
    except (ConfigError, OSError) as error:
        log.error("cannot start: %s", error)
        return 1
    control = ControlServer(daemon, paths.control_socket, paths.running_config, port=port)
    await control.start()
    write_atomic(paths.pid_file, f"{os.getpid()}\n")
    control.running.record(boot_text)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, control.running.reload, paths.saved_config)
    log.info("vpnd ready (control socket %s)", paths.control_socket)
    await stop.wait()
    log.info("stopping: ending %d session(s)", len(daemon.connections))
    await daemon.stop()
    await control.stop()
    control.running.clear()
    paths.pid_file.unlink(missing_ok=True)
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pyroute2").setLevel(logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def raise_fd_limit() -> int:
    """Each session holds a socket and a TUN descriptor: allow as many as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run(paths: Paths, *, listen_host: str = "::", port: int | None = None, log_level: str = "info") -> int:
    setup_logging(log_level)
    log.info("file descriptor limit %d", raise_fd_limit())
    try:
        import uvloop  # noqa: PLC0415 (optional: a faster event loop when it is installed)
    except ImportError:
        return asyncio.run(serve(paths, listen_host=listen_host, port=port))
    log.info("event loop: uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(paths, listen_host=listen_host, port=port))
