"""The generate step of a commit: files rendered from `templates/` (jinja2).

Templates stay thin: every decision (file modes, limits, quoting rules, what a profile says)
is made here or in `vpnd.config.profiles`, and templates only place values. Nothing is
written by `generate()`; `write_files()` does that, atomically, after verify passed.

A commit sends the daemon its configuration as config.boot text (`running_text`, secrets
included); the daemon writes the running file once it runs it. The commit itself writes
`generated/vpnd.service.d/override.conf` under the config directory: the systemd drop-in that
points the unit at this config directory and sizes LimitNOFILE for the pools.
Client profiles (Windows PowerShell, RouterOS, Linux) are rendered on demand by
`render_client_profile()`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from vpnd.config.definitions import Config, range_bounds
from vpnd.config.errors import ConfigError
from vpnd.config.profiles import FORMATS, ProfileFacts, ProfileFormat
from vpnd.config.tree import ConfigTree
from vpnd.paths import DEFAULT_RUN_DIR, Paths, write_atomic

# $VPND_TEMPLATES_DIR when set; otherwise the package's own templates: package data in an
# installed wheel, and in the source tree the link vpnd/templates -> ../templates.
TEMPLATES_DIR = Path(os.environ.get("VPND_TEMPLATES_DIR")
                     or Path(__file__).resolve().parents[1] / "templates")
GENERATED_DIR_NAME = "generated"
DROP_IN = Path("vpnd.service.d") / "override.conf"
MIN_NOFILE = 65536
FDS_PER_SESSION = 4  # TLS socket, TUN device, and room for the RADIUS and netlink sockets they share
LINUX_PROFILE_DIR = "/etc/vpnd/client"


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    path: Path
    content: str
    mode: int


# --- quoting, one function per target language ----------------------------------------------


def powershell_quote(text: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded; ' is doubled."""
    # PowerShell also ends single-quoted strings at the typographic quotes U+2018 and U+2019.
    for quote in ("'", "\u2018", "\u2019"):
        text = text.replace(quote, quote * 2)
    return "'" + text + "'"


_ROUTEROS_ESCAPES = {"\\": "\\\\", '"': '\\"', "$": "\\$", "?": "\\?", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def routeros_quote(text: str) -> str:
    """A RouterOS double-quoted string ($ and ? would otherwise be expanded by the console)."""
    out = []
    for char in text:
        if char in _ROUTEROS_ESCAPES:
            out.append(_ROUTEROS_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\{ord(char):02X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def keyfile_value(text: str) -> str:
    """A GKeyFile value (NetworkManager keyfile): backslash escapes, no raw line breaks."""
    escaped = (text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    if escaped.startswith(" "):
        escaped = "\\s" + escaped[1:]
    return escaped


def _environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # shell, PowerShell, RouterOS and INI: each value is quoted by its filter
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ps"] = powershell_quote
    env.filters["ros"] = routeros_quote
    env.filters["sh"] = shlex.quote
    env.filters["ini"] = keyfile_value
    return env


def render(template: str, templates_dir: Path = TEMPLATES_DIR, **values: Any) -> str:
    try:
        return _environment(templates_dir).get_template(template).render(**values)
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {exc.name} not found in {templates_dir}") from None


# --- the commit's files ---------------------------------------------------------------------------


def pool_addresses(config: Config) -> int:
    sstp = config.vpn.sstp
    if sstp is None:
        return 0
    total = 0
    for pool in sstp.client_ip_pool.values():
        for text in pool.range:
            first, last = range_bounds(text)
            total += last - first + 1
    return total


def nofile_limit(config: Config) -> int:
    return max(MIN_NOFILE, FDS_PER_SESSION * pool_addresses(config) + 1024)


def generated_dir(paths: Paths) -> Path:
    return paths.config_dir / GENERATED_DIR_NAME


def running_text(tree: ConfigTree, notes: list[str] | None = None,
                 templates_dir: Path = TEMPLATES_DIR) -> str:
    """The config.boot text of a commit: what the daemon is sent and the running file holds."""
    return render("running.boot.j2", templates_dir, body=tree.to_boot_text(secrets=True).rstrip("\n"),
                  notes=notes or [])


def generate(config: Config, paths: Paths, *, templates_dir: Path = TEMPLATES_DIR) -> list[GeneratedFile]:
    """The files of one commit (not written yet)."""
    drop_in = generated_dir(paths) / DROP_IN
    extra_paths = [str(p) for p in (paths.config_dir,)
                   if not str(p).startswith(("/etc/vpnd", "/var/lib/vpnd"))]
    if paths.run_dir != DEFAULT_RUN_DIR:
        extra_paths.append(str(paths.run_dir))
    override = render("systemd/override.conf.j2", templates_dir, source=str(drop_in),
                      config_dir=str(paths.config_dir), run_dir=str(paths.run_dir),
                      extra_paths=extra_paths, addresses=pool_addresses(config), nofile=nofile_limit(config))
    return [GeneratedFile(drop_in, override, 0o644)]


def write_files(files: list[GeneratedFile]) -> None:
    for item in files:
        write_atomic(item.path, item.content, mode=item.mode)


# --- client profiles --------------------------------------------------------------------------------


def _windows_encryption(facts: ProfileFacts) -> str:
    # Windows refuses EncryptionLevel Required unless the logon method is MS-CHAPv2 or EAP.
    return "Required" if facts.windows_auth in ("MSChapv2", "Eap") else "Optional"


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-.") or "vpnd"


def render_client_profile(facts: ProfileFacts, fmt: ProfileFormat,
                          templates_dir: Path = TEMPLATES_DIR) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f'profile format "{fmt}" is not one of: {", ".join(FORMATS)}')
    base = _safe_name(facts.connection_name)
    if fmt == "windows":
        return render("profiles/windows.ps1.j2", templates_dir, f=facts,
                      encryption=_windows_encryption(facts))
    if fmt == "routeros":
        return render("profiles/routeros.rsc.j2", templates_dir, f=facts, ca_name="vpnd-ca",
                      interface=f"sstp-{_safe_name(facts.server)}"[:63],
                      password=facts.password if facts.password is not None else "PASSWORD")
    ca_path = f"{LINUX_PROFILE_DIR}/{facts.ca.file_name}" if facts.ca else ""
    password_path = f"{LINUX_PROFILE_DIR}/{_safe_name(facts.user)}.password"
    command = ["vpnd", "client", "--server", facts.server, "--port", str(facts.port), "--user", facts.user]
    if facts.ca:
        command += ["--ca", ca_path]
    if facts.password is not None:
        command += ["--password-file", password_path]
    return render("profiles/linux.sh.j2", templates_dir, f=facts, profile_dir=LINUX_PROFILE_DIR,
                  ca_path=ca_path, password_path=password_path,
                  client_command=shlex.join(command),
                  nm_path=f"/etc/NetworkManager/system-connections/{base}.nmconnection")
