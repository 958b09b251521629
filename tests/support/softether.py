"""SoftEther VPN Server 5.01 (Debian 12) as a real third-party SSTP server for interop tests.

The Debian build never answers SSTP: in ``ProtoHandleConnection`` the loop that looks up the
"SSTP" protocol container dereferences a NULL pointer in the C source (fixed upstream in 5611156c,
after Debian's snapshot), and GCC turned that branch into ``return false``. We never touch the
installed binary; ``patched_vpnserver()`` writes a copy with the 65-byte loop replaced by a
correct one into a cache directory.

Each ``SoftEtherServer`` runs in its own network namespace ``vpndse-<hex>`` joined by a veth pair
(10.250.x.y/30) to the root namespace or to a given client namespace. That namespace has no
default route, so SoftEther's built-in calls to the internet (DDNS, keep-alive, NAT-T) fail
there. Its compiled-in state paths (/var/lib/softether, /var/log/softether, /run/softether) are
bind-mounted from a private directory inside a private mount namespace:

    ip netns exec NS unshare -m sh -c "mount --bind ... && exec vpnserver start --foreground"

Every stage execs, so the Popen PID is vpnserver's; it is stopped by that PID (never with
``vpnserver stop``, which ends in ``killall -KILL vpnserver``). In foreground mode the server
log goes to stdout, which we keep in ``<state>/stdout.log``.

First boot: vpncmd configures listeners (TCP 443 and 5555 only), no UDP, OpenVPN off, SSTP on,
keep-alive and VPN Azure off, a regenerated server certificate, hub DEFAULT with one user, and
SecureNAT with DHCP. The settings vpncmd has no command for (DDNS client, NAT traversal) are
written into vpn_server.config while the server is stopped, then it starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

SOURCE_VPNSERVER = Path("/usr/libexec/softether/vpnserver/vpnserver")
SOURCE_SHA256 = "487e51a73f152c9042837975044edd6d11cef4f29eaff2162512f2b897054212"
VPNCMD = Path("/usr/libexec/softether/vpncmd/vpncmd")
HAMCORE = Path("/usr/share/softether-common/hamcore.se2")
CACHE_DIR = Path("/var/cache/vpnd-tests/softether")

# ProtoHandleConnection's container lookup loop, file offset 0x3a00f..0x3a050 (offset == address
# in this binary). Registers: r15 = proto, rbp = protocol name, rbx = sock (kept); r14d = i and
# r12 = tmp are free here. 0x3a0b1 is the "container found" path and only needs rax = container.
PATCH_OFFSET = 0x3A00F
ORIGINAL_LOOP = bytes.fromhex(
    "488b470831db4889c24885c07528eb3190488b521089d84889ee488b04c2488b38e89b1b1300"
    "85c07417498b570883c3014885d2740b3b5a0872d6660f1f440000"
)
FIXED_LOOP = bytes.fromhex(
    "4531f6"  # xor r14d, r14d
    "498b4708"  # mov rax, [r15+8]        proto->Containers
    "4885c0"  # test rax, rax
    "7435"  # je 0x3a050               return false
    "443b7008"  # cmp r14d, [rax+8]       i < num_item
    "732f"  # jae 0x3a050
    "488b4010"  # mov rax, [rax+0x10]     p
    "4e8b24f0"  # mov r12, [rax+r14*8]    tmp = p[i]
    "498b3c24"  # mov rdi, [r12]          tmp->Name
    "4889ee"  # mov rsi, rbp
    "e89b1b1300"  # call StrCmp (same rel32: same address as before)
    "4183c601"  # add r14d, 1
    "85c0"  # test eax, eax
    "75d5"  # jne 0x3a012
    "4c89e0"  # mov rax, r12            container = tmp
    "eb6f"  # jmp 0x3a0b1
) + b"\x90" * 14
assert len(ORIGINAL_LOOP) == len(FIXED_LOOP) == 65

SSTP_PORT = 443
ADMIN_PORT = 5555
START_TIMEOUT = 15.0
STOP_TIMEOUT = 8.0
AVOID_THIRD_OCTETS = {77}
# SecureNAT is SoftEther's own userspace NAT: these addresses never reach a kernel routing table.
DHCP_GATEWAY = IPv4Address("192.168.30.1")
DHCP_START = IPv4Address("192.168.30.10")
DHCP_END = IPv4Address("192.168.30.200")  # 10.250.77.0/30 is the usual hand-run SoftEther setup


class SoftEtherError(RuntimeError):
    """SoftEther could not be prepared, started or configured."""


def patched_vpnserver(cache_dir: Path = CACHE_DIR, source: Path = SOURCE_VPNSERVER) -> Path:
    """Path of the patched vpnserver copy (written on first use, rewritten if it differs)."""
    try:
        original = source.read_bytes()
    except OSError as exc:
        raise SoftEtherError(f"cannot read {source}: {exc} (is softether-vpnserver installed?)") from exc
    digest = hashlib.sha256(original).hexdigest()
    if digest != SOURCE_SHA256:
        raise SoftEtherError(
            f"{source} has sha256 {digest}, not the Debian 12 build {SOURCE_SHA256} the SSTP patch "
            "was derived from; refusing to patch a different binary"
        )
    if original[PATCH_OFFSET:PATCH_OFFSET + len(ORIGINAL_LOOP)] != ORIGINAL_LOOP:
        raise SoftEtherError(f"{source}: unexpected bytes at 0x{PATCH_OFFSET:x}")
    patched = bytearray(original)
    patched[PATCH_OFFSET:PATCH_OFFSET + len(FIXED_LOOP)] = FIXED_LOOP
    target = cache_dir / "vpnserver"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if target.read_bytes() == patched and os.access(target, os.X_OK):
            _ensure_hamcore(cache_dir)
            return target
    staging = cache_dir / f".vpnserver.{os.getpid()}.{secrets.token_hex(4)}"
    staging.write_bytes(patched)
    staging.chmod(0o755)
    os.replace(staging, target)  # atomic: a concurrent run sees the old or the new copy
    _ensure_hamcore(cache_dir)
    return target


def _ensure_hamcore(cache_dir: Path) -> None:
    # vpnserver loads its resources (strings, default settings) from hamcore.se2 beside itself.
    link = cache_dir / "hamcore.se2"
    if link.is_symlink() and os.readlink(link) == str(HAMCORE):
        return
    staging = cache_dir / f".hamcore.{os.getpid()}.{secrets.token_hex(4)}"
    staging.symlink_to(HAMCORE)
    os.replace(staging, link)


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise SoftEtherError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _addresses_in_use(netns: str | None) -> list[IPv4Network]:
    prefix = ["-n", netns] if netns else []
    networks: list[IPv4Network] = []
    for link in json.loads(_ip(*prefix, "-j", "-4", "addr", "show") or "[]"):
        for info in link.get("addr_info", []):
            networks.append(IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return networks


def _pick_transfer_net(client_netns: str | None) -> IPv4Network:
    """A /30 in 10.250.0.0/16 that no address in the involved namespaces overlaps."""
    used = _addresses_in_use(None) + (_addresses_in_use(client_netns) if client_netns else [])
    rng = random.SystemRandom()
    for _ in range(200):
        third = rng.randrange(1, 255)
        if third in AVOID_THIRD_OCTETS:
            continue
        candidate = IPv4Network(f"10.250.{third}.{4 * rng.randrange(0, 64)}/30")
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise SoftEtherError("no free /30 in 10.250.0.0/16")


def _listening(pid: int, port: int) -> bool:
    """Whether the process's network namespace has a TCP listener on ``port`` (any address)."""
    needle = f":{port:04X} "
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and (fields[1] + " ").endswith(needle) and fields[3] == "0A":
                return True
    return False


class SoftEtherServer:
    """One SoftEther VPN Server in its own network namespace, configured for SSTP.

    Use as a context manager (or ``start()``/``stop()``). From the root namespace (or from
    ``client_netns`` when given) the server is at ``https://{address}:{port}/``; users
    authenticate as ``username``/``password`` with PAP or MS-CHAPv2 (SoftEther offers EAP first).
    SecureNAT hands out addresses from ``dhcp_start`` with ``dhcp_gateway`` as gateway and DNS.
    """

    def __init__(
        self,
        *,
        username: str = "alice",
        password: str | None = None,
        cert_cn: str = "sstp.test",
        client_netns: str | None = None,
        dhcp_gateway: IPv4Address = DHCP_GATEWAY,
        dhcp_start: IPv4Address = DHCP_START,
        dhcp_end: IPv4Address = DHCP_END,
        cache_dir: Path = CACHE_DIR,
        keep_state: bool = False,
    ) -> None:
        self.username = username
        self.password = password if password is not None else "se-" + secrets.token_hex(6)
        self.cert_cn = cert_cn
        self.client_netns = client_netns
        self.dhcp_gateway = dhcp_gateway
        self.dhcp_start = dhcp_start
        self.dhcp_end = dhcp_end
        self.cache_dir = cache_dir
        self.keep_state = keep_state
        tag = secrets.token_hex(4)
        self.netns = f"vpndse-{tag}"
        self._veth_outer = f"vse{tag}o"  # root or client namespace side
        self._veth_inner = f"vse{tag}i"  # SoftEther side
        self.port = SSTP_PORT
        self.address = IPv4Address("0.0.0.0")  # set by start()
        self.client_address = IPv4Address("0.0.0.0")
        self.server_cert_der = b""
        self.state_dir: Path | None = None
        self.pid: int | None = None
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._netns_created = False

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> SoftEtherServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        binary = patched_vpnserver(self.cache_dir)
        try:
            self.state_dir = Path(tempfile.mkdtemp(prefix="vpnd-softether-"))
            for sub in ("lib", "log", "run"):
                (self.state_dir / sub).mkdir()
            self._create_netns()
            self._launch(binary)
            self._first_boot_setup()
            self._terminate()
            self._harden_config()
            self._launch(binary)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM vpnserver by its PID, wait, SIGKILL that PID if needed; delete the namespace."""
        try:
            self._terminate()
        finally:
            if self._netns_created:
                subprocess.run(["ip", "netns", "delete", self.netns], check=False, capture_output=True,
                               timeout=10)
                self._netns_created = False
            if self.state_dir is not None and not self.keep_state:
                shutil.rmtree(self.state_dir, ignore_errors=True)
                self.state_dir = None

    # -- helpers for tests -----------------------------------------------------------------------

    def log_text(self) -> str:
        """The server log so far (vpnserver's stdout in foreground mode)."""
        if self.state_dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self.state_dir / "stdout.log").read_text(errors="replace")
        return ""

    def vpncmd(self, *commands: str, hub: str | None = None) -> str:
        """Run vpncmd server commands (one per string, e.g. "SessionList") and return its output.

        Raises SoftEtherError unless every command reports success.
        """
        assert self.state_dir is not None, "server not started"
        script = self.state_dir / "commands.vpncmd"
        script.write_text("".join(f"{command}\n" for command in commands))
        args = [str(VPNCMD), f"localhost:{ADMIN_PORT}", "/SERVER", f"/IN:{script.name}"]
        if hub is not None:
            args.append(f"/HUB:{hub}")
        result = subprocess.run(self._in_namespace(args, cwd=self.state_dir), check=False,
                                capture_output=True, text=True, errors="replace", timeout=30)
        output = result.stdout + result.stderr
        ok = output.count("The command completed successfully.")
        if result.returncode != 0 or ok != len(commands):
            raise SoftEtherError(f"vpncmd: {ok} of {len(commands)} commands succeeded "
                                 f"(exit {result.returncode}):\n{output[-3000:]}")
        return output

    # -- internals -------------------------------------------------------------------------------

    def _in_namespace(self, argv: list[str], *, cwd: Path | None = None) -> list[str]:
        """argv run in our network namespace with SoftEther's state paths bound to ours."""
        assert self.state_dir is not None
        state = self.state_dir
        binds = " && ".join(
            f"mkdir -p {target} && mount --bind {state / sub} {target}"
            for sub, target in (("lib", "/var/lib/softether"), ("log", "/var/log/softether"),
                                ("run", "/run/softether"))
        )
        change_dir = f" && cd {cwd}" if cwd is not None else ""
        command = shlex.join(argv)
        return ["ip", "netns", "exec", self.netns, "unshare", "-m", "sh", "-c",
                f"{binds}{change_dir} && exec {command}"]

    def _create_netns(self) -> None:
        transfer = _pick_transfer_net(self.client_netns)
        outer, inner = list(transfer.hosts())
        outer_ns = ["-n", self.client_netns] if self.client_netns else []
        _ip("netns", "add", self.netns)
        self._netns_created = True
        _ip("link", "add", self._veth_outer, "type", "veth", "peer", "name", self._veth_inner,
            "netns", self.netns)
        if self.client_netns:
            _ip("link", "set", self._veth_outer, "netns", self.client_netns)
        _ip(*outer_ns, "addr", "add", f"{outer}/30", "dev", self._veth_outer)
        _ip(*outer_ns, "link", "set", self._veth_outer, "up")
        _ip("-n", self.netns, "addr", "add", f"{inner}/30", "dev", self._veth_inner)
        _ip("-n", self.netns, "link", "set", self._veth_inner, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        # Deliberately no default route: SoftEther's own internet calls must fail here.
        self.address = inner
        self.client_address = outer

    def _launch(self, binary: Path) -> None:
        assert self.state_dir is not None
        log = open(self.state_dir / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._process = subprocess.Popen(
                self._in_namespace([str(binary), "start", "--foreground"]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        finally:
            log.close()
        self.pid = self._process.pid
        deadline = time.monotonic() + START_TIMEOUT
        while not (_listening(self.pid, SSTP_PORT) and _listening(self.pid, ADMIN_PORT)):
            if self._process.poll() is not None:
                raise SoftEtherError(f"vpnserver exited with {self._process.returncode}:\n"
                                     f"{self.log_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise SoftEtherError(f"vpnserver not listening on {SSTP_PORT} and {ADMIN_PORT} "
                                     f"within {START_TIMEOUT:g} s:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)

    def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
        self._process = None
        self.pid = None

    def _first_boot_setup(self) -> None:
        assert self.state_dir is not None
        network = IPv4Network(f"{self.dhcp_gateway}/24", strict=False)
        self.vpncmd(
            "ListenerDelete 992",
            "ListenerDelete 1194",
            "PortsUDPSet 0",
            "ProtoOptionsSet OpenVPN /NAME:Enabled /VALUE:false",
            "ProtoOptionsSet SSTP /NAME:Enabled /VALUE:true",
            "KeepDisable",
            "VpnAzureSetEnable no",
            f"ServerCertRegenerate {self.cert_cn}",
            "ServerCertGet server.crt",  # relative: vpncmd takes "/..." for a /PARAM
            "Hub DEFAULT",
            f"UserCreate {self.username} /GROUP:none /REALNAME:none /NOTE:none",
            f"UserPasswordSet {self.username} /PASSWORD:{self.password}",
            "SecureNatEnable",
            f"DhcpSet /START:{self.dhcp_start} /END:{self.dhcp_end} /MASK:{network.netmask} "
            f"/EXPIRE:7200 /GW:{self.dhcp_gateway} /DNS:{self.dhcp_gateway} /DNS2:none "
            "/DOMAIN:none /LOG:yes /PUSHROUTE:none",
        )
        text = (self.state_dir / "server.crt").read_text()
        self.server_cert_der = ssl.PEM_cert_to_DER_cert(text)

    def _harden_config(self) -> None:
        """Settings without a vpncmd command; the server must be stopped (it saves on exit)."""
        assert self.state_dir is not None
        path = self.state_dir / "lib" / "vpn_server.config"
        raw = path.read_bytes()
        bom = b"\xef\xbb\xbf" if raw.startswith(b"\xef\xbb\xbf") else b""
        lines = raw[len(bom):].decode("utf-8").splitlines(keepends=True)
        in_ddns = False
        changed = {"ddns": False, "nat-t": False}
        for index, line in enumerate(lines):
            stripped = line.strip()
            if stripped == "declare DDnsClient":
                in_ddns = True
            elif in_ddns and stripped == "}":
                in_ddns = False
            elif in_ddns and stripped.startswith("bool Disabled "):
                lines[index] = line.replace("false", "true")
                changed["ddns"] = True
            elif stripped.startswith("bool DisableNatTraversal "):
                lines[index] = line.replace("false", "true")
                changed["nat-t"] = True
            elif stripped.startswith("bool UseKeepConnect "):
                lines[index] = line.replace("true", "false")
        missing = [name for name, done in changed.items() if not done]
        if missing:
            raise SoftEtherError(f"{path}: settings not found: {', '.join(missing)}")
        path.write_bytes(bom + "".join(lines).encode("utf-8"))


