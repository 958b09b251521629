"""The control protocol between the `vpnd` CLI and the running daemon.

One JSON object per line over a unix stream socket (``Paths.control_socket``, mode 0600 in a
0700 run directory: root-only). Request: ``{"cmd": NAME, ...arguments}``. Answer:
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "words"}``.

Commands: ``show-sessions``, ``show-session`` (ifname), ``show-statistics``, ``reset``
(user | interface | all), ``apply`` (config: config.boot text; force: verify's errors only warn, for the
automatic rollback), ``ping``.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

MAX_MESSAGE = 16 * 1024 * 1024


class ControlError(Exception):
    """The daemon is not reachable or refused the request; the message says which."""


def request(socket_path: Path, command: str, timeout: float = 30.0, **arguments: Any) -> Any:
    """Send one command and return its result; raises ControlError with the daemon's words."""
    payload = json.dumps({"cmd": command, **arguments}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(socket_path))
            sock.sendall(payload)
            data = bytearray()
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_MESSAGE:
                    raise ControlError("answer from the daemon is too large")
    except FileNotFoundError as error:
        raise ControlError(f"vpnd is not running (no control socket at {socket_path})") from error
    except ConnectionRefusedError as error:
        raise ControlError(f"vpnd is not running (nothing listens on {socket_path})") from error
    except PermissionError as error:
        raise ControlError(f"no permission to use {socket_path}: run as root") from error
    except OSError as error:
        raise ControlError(f"control socket {socket_path}: {error.strerror or error}") from error
    try:
        answer = json.loads(data)
    except json.JSONDecodeError as error:
        raise ControlError("the daemon's answer is not valid JSON") from error
    if not isinstance(answer, dict):
        raise ControlError("the daemon's answer is not a JSON object")
    if not answer.get("ok"):
        raise ControlError(str(answer.get("error", "request refused")))
    return answer.get("result")
