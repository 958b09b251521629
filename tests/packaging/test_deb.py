"""The Debian package, as an operator meets it: built by packaging/build-deb.sh, installed with dpkg
into a fresh Debian 12 root (debootstrap, minbase), configured and run there by the `vpnd` on its
PATH in a network namespace, dialled by our client from another namespace, then upgraded, removed
and purged.

Downloads are cached between runs in $VPND_TEST_CACHE (default /var/cache/vpnd-tests), outside
the repository: ``pip/`` is the pip cache of the package build, ``debian-root/`` the root that
debootstrap made, as a tarball keyed by suite, mirror, architecture and the package's Depends
(a change of the list builds a new root). With nothing cached the test downloads all of it.
Measured on 2 busy cores: 4.5 to 5 min warm (the package build is 2 to 3 min of it), 4.5 to 8 min
cold (debootstrap adds 2.5 to 3 min).

Every command in the root runs as ``unshare --mount ... chroot``: proc, sys and dev are mounted in
a mount namespace of that command alone and disappear with it, whatever happens to the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.netns import PYTHON, REPO, Lab, Namespace, require_root_netns
from tests.support.peers import require_program
from tests.support.vpn_client import Client

CACHE = Path(os.environ.get("VPND_TEST_CACHE", "/var/cache/vpnd-tests"))
SUITE = "bookworm"
MIRROR = os.environ.get("VPND_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
GATEWAY = IPv4Address("10.254.255.1")  # the embedded default's
ALICE = ("alice", "alice-package-secret")
FIRST_START = re.compile(r"demo user: demo +password: (\S+)")
READY = "vpnd ready"

# Runs "$@" chrooted into $1 with proc, sys and dev mounted for it alone; PATH is the root's own,
# so `vpnd` is found where the package put it, and nothing of the test's environment leaks in.
CHROOT = (
    'set -e; root=$1; shift; '
    'mount -t proc proc "$root/proc"; mount -t sysfs sysfs "$root/sys"; mount --bind /dev "$root/dev"; '
    'exec chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"'
)


def in_root(root: Path, *argv: str) -> list[str]:
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", CHROOT, "sh", str(root), *argv]


def run(argv: list[str], timeout: float,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert done.returncode == 0, f"{argv[:8]} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root`` in the test's own mount namespace."""
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [point for point in points if point == str(root) or point.startswith(f"{root}/")]


# --- building -----------------------------------------------------------------------------------


def build_package(out: Path, workdir: Path) -> Path:
    """packaging/build-deb.sh, with pip's downloads cached between runs."""
    environment = {**os.environ, "PIP_CACHE_DIR": str(CACHE / "pip"), "TMPDIR": str(workdir)}
    done = run([str(REPO / "packaging" / "build-deb.sh"), str(out)], timeout=1200, env=environment)
    return Path(done.stdout.strip().splitlines()[-1])


def field(deb: Path, name: str) -> str:
    return run(["dpkg-deb", "--field", str(deb), name], timeout=60).stdout.strip()


def dependencies(deb: Path) -> list[str]:
    """The package names of the .deb's Depends (the first of alternatives, versions dropped)."""
    return sorted({entry.split("|")[0].split("(")[0].strip() for entry in field(deb, "Depends").split(",")})


def debian_root(deb: Path) -> Path:
    """A tarball of a minbase Debian 12 root with the package's dependencies, made by debootstrap
    once per suite, mirror, architecture and Depends, and reused from the cache afterwards."""
    architecture = field(deb, "Architecture")
    key_text = f"{SUITE} minbase {architecture} {MIRROR} {field(deb, 'Depends')}"
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    cache = CACHE / "debian-root"
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{SUITE}-minbase-{architecture}-{key}.tar.zst"
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test run may be making the same root
        if tarball.exists():
            return tarball
        build = Path(str(tarball) + ".build")
        shutil.rmtree(build, ignore_errors=True)
        try:
            # In its own mount namespace: the proc and sys that debootstrap mounts cannot outlive it.
            run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
                 f"--include={','.join(dependencies(deb))}", f"--arch={architecture}", SUITE, str(build),
                 MIRROR], timeout=1200)
            partial = tarball.with_suffix(".partial")
            run(["tar", "--zstd", "--numeric-owner", "-C", str(build), "-cf", str(partial), "."], timeout=600)
            partial.replace(tarball)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        for stale in cache.glob("*.tar.zst"):  # roots for another package list are not needed again
            if stale != tarball:
                stale.unlink()
        (cache / "key.txt").write_text(key_text + "\n")
    return tarball


# --- the installed system -------------------------------------------------------------------------


@dataclass
class Installed:
    root: Path
    deb: Path
    workdir: Path

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run(in_root(self.root, *argv), timeout=timeout)

    def copy_in(self, deb: Path) -> str:
        shutil.copy(deb, self.path("/tmp") / deb.name)
        return f"/tmp/{deb.name}"

    def config_files(self) -> dict[str, str]:
        """Every file under /etc/vpnd and the hash of its content."""
        top = self.path("/etc/vpnd")
        return {str(path.relative_to(top)): hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted(top.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    require_root_netns()
    for program in ("dpkg-buildpackage", "dh_virtualenv", "debootstrap", "unshare", "chroot", "zstd"):
        require_program(program)
    workdir = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    deb = build_package(workdir / "out", workdir)
    built = time.monotonic()
    tarball = debian_root(deb)
    root = workdir / "root"
    root.mkdir()
    run(["tar", "--zstd", "--numeric-owner", "-C", str(root), "-xf", str(tarball)], timeout=600)
    system = Installed(root, deb, workdir)
    try:
        system.run("dpkg", "--install", system.copy_in(deb))
        print(f"package built in {built - started:.0f} s, root ready and package installed in "
              f"{time.monotonic() - built:.0f} s")
        yield system
    finally:
        left = mounts_under(root)
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"mounts left under the root: {left}"


def test_package_installs_the_daemon_its_unit_and_a_private_config_directory(installed: Installed) -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    project_version = re.search(r'^version = "([^"]+)"', pyproject, re.MULTILINE)
    assert project_version is not None
    assert field(installed.deb, "Version") == project_version[1]
    found = installed.run("sh", "-c", 'readlink -f "$(command -v vpnd)"').stdout.strip()
    assert found == "/opt/venvs/vpnd/bin/vpnd"

    unit = installed.path("/lib/systemd/system/vpnd.service").read_text()
    for line in ("ExecStart=/usr/bin/vpnd run", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                 "RuntimeDirectory=vpnd", "ConfigurationDirectory=vpnd"):
        assert line in unit.splitlines(), f"{line!r} missing from the unit:\n{unit}"
    # Not enabled on install: its first start would open port 443 with a demo user.
    assert not list(installed.path("/etc/systemd/system").rglob("vpnd.service"))

    config_dir = installed.path("/etc/vpnd")
    assert config_dir.is_dir() and config_dir.stat().st_mode & 0o777 == 0o700
    assert installed.config_files() == {}  # the daemon writes the default, not the package
    listed = installed.run("dpkg", "--listfiles", "vpnd").stdout.splitlines()
    assert not [path for path in listed if path.startswith("/etc/vpnd")]
    site_packages = installed.path("/opt/venvs/vpnd/lib").glob("python3*/site-packages")
    assert [path for path in site_packages if (path / "vpnd" / "templates" / "running.boot.j2").is_file()]


@dataclass
class Site:
    """The installed root as a server namespace, and a client namespace linked to it."""

    lab: Lab
    server: Namespace
    client: Namespace
    address: str  # the server's, on the link
    system: Installed

    def start_daemon(self, log: Path) -> subprocess.Popen[str]:
        process = self.lab.start(self.server, *in_root(self.system.root, "vpnd", "run"), log=log)
        deadline = time.monotonic() + 60
        while READY not in log.read_text():
            assert process.poll() is None, f"vpnd run exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"vpnd run not ready after 60 s:\n{log.read_text()}"
            time.sleep(0.1)
        return process

    def configure(self, *commands: str) -> str:
        argv = ["vpnd", "configure"]
        for command in commands:
            argv += ["-c", command]
        done = subprocess.run(self.server.command(*in_root(self.system.root, *argv)), capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, f"vpnd configure failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def dial(self, user: str, password: str, log: Path) -> Client:
        certificate = self.system.path("/etc/vpnd/tls/server.pem")
        names = x509.load_pem_x509_certificate(certificate.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        argv = [PYTHON, "-m", "vpnd.cli.main", "client", "--server", self.address, "--sni", names[0],
                "--ca", str(certificate), "--user", user, "--password", password]
        client = Client(self.lab.start(self.client, *argv, log=log), log, self.lab, argv=argv)
        client.wait_connected(timeout=60)
        return client

    def ping_gateway(self) -> int:
        done = self.client.run(PYTHON, "-m", "tests.support.ping", str(GATEWAY), "3", timeout=30)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())


@contextlib.contextmanager
def site(system: Installed) -> Iterator[Site]:
    lab = Lab()
    try:
        server, client = lab.namespace(), lab.namespace()
        link = lab.veth(server, client)
        yield Site(lab, server, client, str(link.address_a.ip), system)
    finally:
        lab.cleanup()
    lab.assert_clean()


def test_installed_vpnd_is_configured_dialled_upgraded_removed_and_purged(installed: Installed) -> None:
    logs = installed.workdir
    with site(installed) as here:
        # First start: the embedded default is written into /etc/vpnd and served.
        daemon = here.start_daemon(logs / "first-start.log")
        assert FIRST_START.search((logs / "first-start.log").read_text())
        output = here.configure(f"set vpn sstp authentication local-users username {ALICE[0]} "
                                f"password {ALICE[1]}", "commit", "save")
        assert "ERROR" not in output.upper(), output
        # The templates are package data: with no hint where they are, the installed vpnd rendered
        # the commit's files, and renders a client profile.
        profile = installed.run("vpnd", "show", "client-profile", ALICE[0], "--format", "linux",
                                "--server", "vpn.example.net").stdout
        assert "vpn.example.net" in profile
        client = here.dial(*ALICE, logs / "client-1.log")
        assert client.peer == GATEWAY
        assert here.ping_gateway() == 3
        client.stop()
        assert here.lab.stop(daemon, timeout=20) == 0, (logs / "first-start.log").read_text()

        before = installed.config_files()
        assert {"config.boot", "tls/server.pem", "tls/server.key"} <= set(before)
        assert any(name.startswith("archive/") for name in before), before

        # An upgrade leaves the operator's files as they are, and the new package serves them.
        # Installing the package over itself is dpkg's upgrade path (prerm upgrade, unpack over the
        # old files, postrm upgrade, postinst configure <old version>) without repacking 170 MB.
        upgrade = installed.run("dpkg", "--install", installed.copy_in(installed.deb)).stdout
        assert "over (" in upgrade, upgrade  # "Preparing to unpack ... over (<installed version>)"
        assert installed.config_files() == before
        daemon = here.start_daemon(logs / "after-upgrade.log")
        assert not FIRST_START.search((logs / "after-upgrade.log").read_text())
        client = here.dial(*ALICE, logs / "client-2.log")
        client.stop()
        assert here.lab.stop(daemon, timeout=20) == 0, (logs / "after-upgrade.log").read_text()

    # Removal takes the program and keeps the configuration; purge deletes it.
    installed.run("dpkg", "--remove", "vpnd")
    assert not installed.path("/usr/bin/vpnd").exists()
    assert not installed.path("/opt/venvs/vpnd").exists()
    assert installed.config_files() == before
    installed.run("dpkg", "--purge", "vpnd")
    assert not installed.path("/etc/vpnd").exists()
