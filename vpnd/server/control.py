"""The daemon's side of the control protocol (see vpnd.control)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from vpnd.config.errors import ConfigError
from vpnd.control import MAX_MESSAGE
from vpnd.server.daemon import Daemon
from vpnd.server.running import RunningConfig

log = logging.getLogger("vpnd.control")


class ControlServer:
    def __init__(self, daemon: Daemon, socket_path: Path, running_config: Path | None = None, *,
                 port: int | None = None) -> None:
        self.daemon = daemon
        self.socket_path = socket_path
        self.running = RunningConfig(daemon, running_config, port=port)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_path.parent, 0o700)
        if self.socket_path.exists():
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path),
                                                       limit=MAX_MESSAGE)
        os.chmod(self.socket_path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self.socket_path.exists():
            self.socket_path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=30)
            answer = self.handle(line)
        except (TimeoutError, asyncio.LimitOverrunError, ValueError) as error:
            answer = {"ok": False, "error": f"bad request: {error}"}
        writer.write(json.dumps(answer, default=str).encode() + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": "request needs a \"cmd\""}
        command = request["cmd"]
        daemon = self.daemon
        try:
            if command == "ping":
                return {"ok": True, "result": "pong"}
            if command == "show-sessions":
                return {"ok": True, "result": daemon.sessions()}
            if command == "show-session":
                rows = [row for row in daemon.sessions() if row["ifname"] == request.get("ifname")]
                if not rows:
                    return {"ok": False, "error": f"no session on interface {request.get('ifname')}"}
                return {"ok": True, "result": rows[0]}
            if command == "show-statistics":
                return {"ok": True, "result": daemon.statistics()}
            if command == "reset":
                ended = daemon.reset(user=request.get("user"), ifname=request.get("interface"),
                                     everyone=bool(request.get("all")))
                return {"ok": True, "result": {"ended": ended}}
            if command == "apply":
                return self._apply(str(request.get("config", "")), force=request.get("force") is True)
        except (ValueError, TypeError, KeyError) as error:
            return {"ok": False, "error": f"{command}: {error}"}
        return {"ok": False, "error": f"unknown command {command!r}"}

    def _apply(self, boot_text: str, *, force: bool) -> dict[str, Any]:
        try:
            report = self.running.apply(boot_text, force=force)
        except ConfigError as error:
            return {"ok": False, "error": "\n".join(error.messages)}
        return {"ok": True, "result": {"applied": report.applied, "ended": report.ended_sessions,
                                       "kept": report.kept_sessions}}
