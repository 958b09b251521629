"""A private FreeRADIUS 3.2 server on 127.0.0.1 for the RADIUS tests.

Each ``FreeRadius`` copies the packaged configuration (/etc/freeradius/3.0) into its own
temporary directory, points every path there, stays root (no switch to the freerad user), sets
``reject_delay = 0`` (the default 1 s delay would slow every reject test) and replaces all
virtual servers by one site listening on free ports of 127.0.0.1:

    authorize { filter_username preprocess chap mschap files pap }
    authenticate { PAP, CHAP, MS-CHAP }
    accounting { detail (one file, ``detail_path``) ok }

EAP is removed (it needs certificates) unless ``eap_types`` names the EAP types to run: then an
``eap`` module of our own (no certificates needed for ``mschapv2`` alone) is written and
``eap`` joins authorize and authenticate as in the packaged default site. Users go to
``mods-config/files/authorize`` verbatim, in the FreeRADIUS users-file syntax. The server runs
in the foreground (``-f``), in its own session, and is stopped by its PID: SIGTERM, then
SIGKILL if it lingers.

Typical use, one server per test module::

    @pytest.fixture(scope="module")
    def radius():
        require_program("freeradius")
        with FreeRadius(users=USERS) as server:
            yield server
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.netns import Namespace

PACKAGED_RADDB = Path("/etc/freeradius/3.0")
DEFAULT_SECRET = "testing123"
READY_MARK = "Ready to process requests"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class RadiusClientEntry:
    """One ``client`` block of clients.conf (a NAS allowed to talk to the server)."""

    name: str
    ipaddr: str  # address or CIDR; IPv6 is written as ipv6addr
    secret: str = DEFAULT_SECRET
    require_message_authenticator: bool = False


def free_udp_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct UDP ports that are free right now (all bound at once, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class FreeRadius:
    """A running FreeRADIUS (after ``start()`` or inside ``with``)."""

    def __init__(
        self,
        users: str,
        clients: Sequence[RadiusClientEntry] | None = None,
        *,
        auth_port: int = 0,
        acct_port: int = 0,
        host: str = "127.0.0.1",
        secret: str = DEFAULT_SECRET,
        reject_delay: int = 0,
        debug: bool = False,
        extra_authorize: str = "",
        extra_post_auth: str = "",
        sign_replies: bool = True,
        program: str = "freeradius",
        eap_types: Sequence[str] = (),
        eap_tls: EapTlsFiles | None = None,
    ) -> None:
        """``users``: users-file text. ``clients``: default one 127.0.0.1 client with ``secret``.
        Ports 0 pick free ports. ``debug`` runs ``-X`` (full packet trace in ``stdout_path``).
        ``extra_authorize`` / ``extra_post_auth``: unlang lines appended to those sections.
        ``sign_replies``: put a Message-Authenticator into every Accept and Reject. FreeRADIUS
        3.2.5+ does so by itself for requests that carried one (BlastRADIUS); 3.2.1 does not."""
        if auth_port == 0 or acct_port == 0:
            picked = free_udp_ports(2, host)
            auth_port = auth_port or picked[0]
            acct_port = acct_port or picked[1]
        self.host = host
        self.auth_port = auth_port
        self.acct_port = acct_port
        self.secret = secret
        self.users = users
        self.clients = list(clients) if clients is not None else [
            RadiusClientEntry("localhost", "127.0.0.1", secret),
        ]
        self.reject_delay = reject_delay
        self.debug = debug
        self.extra_authorize = extra_authorize
        self.extra_post_auth = extra_post_auth
        self.sign_replies = sign_replies
        self.eap_types = tuple(eap_types)
        self.eap_tls = eap_tls
        self.program = shutil.which(program) or program
        self.state_dir = Path(tempfile.mkdtemp(prefix="vpnd-freeradius-"))
        self.raddb = self.state_dir / "raddb"
        self.log_path = self.state_dir / "radius.log"
        self.stdout_path = self.state_dir / "stdout.log"
        self.detail_path = self.state_dir / "radacct" / "detail"
        self._process: subprocess.Popen[bytes] | None = None

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> FreeRadius:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def auth_address(self) -> tuple[str, int]:
        return (self.host, self.auth_port)

    @property
    def acct_address(self) -> tuple[str, int]:
        return (self.host, self.acct_port)

    def start(self) -> None:
        self.write_config()
        args = [self.program, "-d", str(self.raddb)]
        args += ["-X"] if self.debug else ["-f", "-l", str(self.log_path)]
        with open(self.stdout_path, "wb") as stdout:
            self._process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if READY_MARK in self.log_text():
                return
            if self._process.poll() is not None:
                break
            time.sleep(0.05)
        output = self.log_text()[-4000:]
        self.stop()
        raise RuntimeError(f"FreeRADIUS did not start (config in {self.raddb}):\n{output}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)

    def cleanup(self) -> None:
        """Remove the state directory (the server must be stopped)."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # --- output -----------------------------------------------------------------------------

    def log_text(self) -> str:
        parts = []
        for path in (self.log_path, self.stdout_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def detail_records(self) -> list[dict[str, list[str]]]:
        """Accounting records of the detail file: attribute name → values (quotes removed)."""
        try:
            text = self.detail_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        records: list[dict[str, list[str]]] = []
        current: dict[str, list[str]] | None = None
        for line in text.splitlines():
            if not line.strip():
                current = None
                continue
            if not line[0].isspace():  # the header line (a time stamp) opens a record
                current = {}
                records.append(current)
                continue
            name, _, value = line.strip().partition(" = ")
            if current is not None and name:
                current.setdefault(name, []).append(_unquote(value))
        return records

    # --- configuration ----------------------------------------------------------------------

    def write_config(self) -> None:
        shutil.rmtree(self.raddb, ignore_errors=True)
        for sub in ("log", "run", "radacct"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        shutil.copytree(PACKAGED_RADDB, self.raddb, symlinks=True)
        self._patch_radiusd_conf()
        for site in (self.raddb / "sites-enabled").iterdir():
            site.unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.raddb / "mods-enabled" / "eap").unlink()
        if self.eap_types:
            (self.raddb / "mods-enabled" / "eap").write_text(self._eap_config())
        if "peap" in self.eap_types:
            (self.raddb / "sites-enabled" / "vpnd-tests-inner").write_text(_INNER_TUNNEL)
        (self.raddb / "sites-enabled" / "vpnd-tests").write_text(self._site_config())
        (self.raddb / "mods-enabled" / "vpnd_detail").write_text(
            "detail vpnd_detail {\n"
            "  filename = ${radacctdir}/detail\n"
            "  escape_filenames = no\n"
            "  permissions = 0644\n"
            '  header = "%t"\n'
            "}\n"
        )
        (self.raddb / "clients.conf").write_text("".join(_client_block(c) for c in self.clients))
        (self.raddb / "mods-config" / "files" / "authorize").write_text(self.users.rstrip() + "\n")

    def _patch_radiusd_conf(self) -> None:
        path = self.raddb / "radiusd.conf"
        text = path.read_text()
        replacements = {
            r"^raddbdir = .*$": f"raddbdir = {self.raddb}",
            r"^logdir = .*$": f"logdir = {self.state_dir / 'log'}",
            r"^radacctdir = .*$": f"radacctdir = {self.state_dir / 'radacct'}",
            r"^run_dir = .*$": f"run_dir = {self.state_dir / 'run'}",
            r"^(\s*)(user|group) = freerad": r"\1#\2 = freerad",
            r"^(\s*)reject_delay = \d+": rf"\g<1>reject_delay = {self.reject_delay}",
        }
        for pattern, replacement in replacements.items():
            text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
            if count == 0:
                raise RuntimeError(f"radiusd.conf: no line matches {pattern!r}")
        path.write_text(text)

    def _site_config(self) -> str:
        sign = "    update reply {\n      Message-Authenticator := 0x00\n    }\n" if self.sign_replies else ""
        eap_authorize = "    eap {\n      ok = return\n    }" if self.eap_types else ""
        eap_authenticate = "    eap" if self.eap_types else ""
        return f"""server vpnd_tests {{
  listen {{
    type = auth
    ipaddr = {self.host}
    port = {self.auth_port}
  }}
  listen {{
    type = acct
    ipaddr = {self.host}
    port = {self.acct_port}
  }}
  authorize {{
    filter_username
    preprocess
    chap
    mschap
{eap_authorize}
    files
    pap
{self.extra_authorize}
  }}
  authenticate {{
    Auth-Type PAP {{
      pap
    }}
    Auth-Type CHAP {{
      chap
    }}
    Auth-Type MS-CHAP {{
      mschap
    }}
{eap_authenticate}
  }}
  preacct {{
    preprocess
    acct_unique
  }}
  accounting {{
    vpnd_detail
    ok
  }}
  post-auth {{
{self.extra_post_auth}
{sign}
    Post-Auth-Type REJECT {{
      attr_filter.access_reject
{sign}
    }}
  }}
}}
"""

    def _eap_config(self) -> str:
        # send_error: a wrong MS-CHAPv2 password gets a Failure-Request with E=691 first, as
        # Windows expects, not a bare EAP-Failure.
        options = {"mschapv2": "    send_error = yes\n",
                   "peap": "    tls = vpnd\n    default_eap_type = mschapv2\n"
                           "    virtual_server = vpnd_tests_inner\n"
                           # the inner user's reply items (Framed-IP-Address...) reach the Accept
                           "    use_tunneled_reply = yes\n",
                   "tls": "    tls = vpnd\n"}
        types = "".join(f"  {name} {{\n{options.get(name, '')}  }}\n" for name in self.eap_types)
        tls = ""
        if self.eap_tls is not None:
            tls = (
                "  tls-config vpnd {\n"
                f"    private_key_file = {self.eap_tls.key}\n"
                f"    certificate_file = {self.eap_tls.certificate}\n"
                f"    ca_file = {self.eap_tls.ca}\n"
                '    cipher_list = "DEFAULT"\n'
                '    tls_min_version = "1.2"\n'
                f'    tls_max_version = "{self.eap_tls.max_version}"\n'
                f"    check_crl = {'yes' if self.eap_tls.check_crl else 'no'}\n"
                "    cache {\n      enable = no\n    }\n"
                "  }\n"
            )
        return (
            "eap {\n"
            f"  default_eap_type = {self.eap_types[0]}\n"
            "  timer_expire = 60\n"
            "  ignore_unknown_eap_types = no\n"
            "  max_sessions = 64\n"
            f"{tls}{types}"
            "}\n"
        )


@dataclass(frozen=True, slots=True)
class EapTlsFiles:
    """PEM files of the eap module's TLS: the server's certificate and key, the CA it trusts."""

    certificate: Path
    key: Path
    ca: Path  # CA certificates, and the CRLs when check_crl is set
    max_version: str = "1.2"  # "1.3" for EAP-TLS 1.3 (RFC 9190)
    check_crl: bool = False


# PEAP's inner method runs in a virtual server of its own, as in the packaged inner-tunnel.
_INNER_TUNNEL = """server vpnd_tests_inner {
  authorize {
    filter_username
    mschap
    eap {
      ok = return
    }
    files
  }
  authenticate {
    Auth-Type MS-CHAP {
      mschap
    }
    eap
  }
  post-auth {
  }
}
"""


def freeradius_in(namespace: Namespace, workdir: Path, users: str, **options: Any) -> FreeRadius:
    """FreeRADIUS (not started) that will run inside ``namespace``: ``ip netns exec`` execs the
    server, so the PID the harness holds (and stops) is FreeRADIUS's own. ``options`` go to
    ``FreeRadius``."""
    wrapper = workdir / "freeradius-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace.name} freeradius "$@"\n')
    wrapper.chmod(0o755)
    return FreeRadius(users, program=str(wrapper), **options)


def _client_block(client: RadiusClientEntry) -> str:
    # FreeRADIUS wants one item per line inside a block.
    address_key = "ipv6addr" if ":" in client.ipaddr else "ipaddr"
    require = "yes" if client.require_message_authenticator else "no"
    return (
        f"client {client.name} {{\n"
        f"  {address_key} = {client.ipaddr}\n"
        f"  secret = {client.secret}\n"
        f"  require_message_authenticator = {require}\n"
        "}\n"
    )


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


@contextlib.contextmanager
def running_freeradius(users: str, **options: object) -> Iterator[FreeRadius]:
    """``FreeRadius`` started, then stopped and its directory removed."""
    server = FreeRadius(users, **options)  # type: ignore[arg-type]
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
