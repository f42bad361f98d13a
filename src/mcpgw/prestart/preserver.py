"""The pre-server: `mcpgw serve` over stdio answering its opening requests while it is still importing.

Owns: `begin` (called first thing by the entry points: when the command is a stdio `serve` whose
saved answers match the inputs, a thread answers stdin from them) and `handover` (the full
server stops that thread and takes every byte it read, in order, with the ids it answered).

The thread answers `initialize`, `server/discover` and the lists that the saved answers hold for
exactly this request; everything else (notifications, calls, a miss) is only kept, to be read by
the full server as if it came from stdin now. Over the handshake, once `initialize` is not
answered here nothing else is. A line it cannot parse is kept too: the full server answers it as
it would have. Standard library only: this runs before pydantic and the mcp SDK are imported.
"""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import sys
import threading
import time
from types import FrameType
from typing import Any

from mcpgw.prestart import answers as saved

MAX_PENDING = 1 << 20
"""A partial line longer than this stops the pre-server's reading: the rest is the full server's."""
_OPTIONS = {
    "--config": "config",
    "-c": "config",
    "--transport": "transport",
    "-t": "transport",
    "--persona": "persona",
    "-p": "persona",
    "--log-level": None,
    "--log-format": None,
    "--metrics-port": None,
}
"""`serve`'s options with a value (those that shape answers named); any other argument: no pre-server."""


class Handover:
    """What the pre-server leaves to the full server (a plain class: `dataclasses` costs an import
    of `inspect`, tens of ms, on the path this module exists to keep short)."""

    def __init__(self, path: str) -> None:
        self.path = path
        """The saved answers' file."""
        self.consumed = b""
        """Every byte read from stdin, in order: the full server reads them first."""
        self.answered: dict[str, tuple[str, Any]] = {}
        """Answered here: canonical request id -> (method, the result sent)."""
        self.notes: list[str] = []
        """What was answered when, for the log (which is not set up while the pre-server runs)."""


class _PreServer:
    def __init__(self, path: str, answers: dict[str, Any]) -> None:
        self.path = path
        self._answers = answers
        self._started = time.perf_counter()
        self._consumed = bytearray()
        self._scanned = 0
        self._session: Any = None
        self._blocked = False
        self._handover = Handover(path)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, name="mcpgw-preserver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> Handover:
        os.write(self._wake_w, b"x")
        self._thread.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._handover.consumed = bytes(self._consumed)
        return self._handover

    def _serve(self) -> None:
        poller = select.poll()
        poller.register(0, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            try:
                data = os.read(0, 65536)
            except OSError:
                return
            if not data:
                return  # EOF: the full server reads it too, after the lines kept
            self._consumed += data
            while (end := self._consumed.find(b"\n", self._scanned)) >= 0:
                line = bytes(self._consumed[self._scanned : end])
                self._scanned = end + 1
                if not self._blocked:
                    self._line(line)
            if len(self._consumed) - self._scanned > MAX_PENDING:
                return

    def _line(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # the full server answers it (-32700), as without a pre-server
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or "method" not in message:
            return
        method, params, request_id = message.get("method"), message.get("params"), message.get("id")
        if "id" not in message:
            return  # a notification: only kept
        if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
            return
        answered = self._handover.answered
        key = saved.canonical(request_id).decode()
        result = None
        if isinstance(method, str) and method in saved.METHODS and key not in answered:
            result = self._answers.get(saved.request_key(method, params, self._session))
        if result is None:
            if method == "initialize" or key in answered:
                self._blocked = True  # the connection's state is the full server's from here on
            return
        if method == "initialize":
            self._session = params
        reply = (
            json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}, separators=(",", ":")) + "\n"
        )
        try:
            _write_all(1, reply.encode())
        except OSError:
            self._blocked = True
            return
        answered[key] = (str(method), result)
        self._handover.notes.append(
            f"{method} (id {key}) {time.perf_counter() - self._started:.3f}s after the pre-server began, "
            f"mcp SDK imported: {'yes' if 'mcp' in sys.modules else 'no'}"
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


_running: _PreServer | None = None
_begun = False


def begin(argv: list[str]) -> None:
    """Start the pre-server if `argv` is a stdio `serve` with saved answers for what it would serve."""
    global _running, _begun
    if _begun:
        return
    _begun = True
    options = _serve_options(argv)
    if options is None or options.get("transport", "stdio") != "stdio" or not hasattr(select, "poll"):
        return  # (no poll(): Windows, where the gateway starts as it always has)
    registry = _registry_path(options.get("config"))
    if registry is None or not (is_pipe(0) and is_pipe(1)):
        return
    path = saved.answers_path(registry)
    data = saved.read(path)
    if data is None:
        return
    inputs = saved.inputs_digest(saved.static_digest(data["files"], options.get("persona")), data["memory"])
    answers = data["answers"].get(inputs)
    if not isinstance(answers, dict) or not answers:
        return
    _running = _PreServer(path, answers)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    _running.start()


def handover() -> Handover | None:
    """Stop the pre-server (if one runs) and take what it read and answered."""
    global _running
    running, _running = _running, None
    if running is None:
        return None
    handed = running.stop()
    # From here upstreams start: a SIGTERM waits for the full server's own handling (`resend_deferred`).
    signal.signal(signal.SIGTERM, _defer_signal)
    return handed


def resend_deferred() -> None:
    """Called once the full server handles signals itself: a SIGTERM that came in between is sent again."""
    while _deferred:
        os.kill(os.getpid(), _deferred.pop(0))


_deferred: list[int] = []


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM while the pre-server answers: nothing is started yet, so exit at once (cleanly)."""
    raise SystemExit(0)


def _defer_signal(signum: int, frame: FrameType | None) -> None:
    _deferred.append(signum)


def _serve_options(argv: list[str]) -> dict[str, str] | None:
    if not argv or argv[0] != "serve":
        return None
    options: dict[str, str] = {}
    rest = iter(argv[1:])
    for arg in rest:
        name, eq, value = arg.partition("=")
        if name not in _OPTIONS or (eq and not name.startswith("--")):
            return None  # --help, an unknown flag: leave it all to click
        if not eq:
            value = next(rest, "")
            if not value:
                return None
        if (key := _OPTIONS[name]) is not None:
            options[key] = value
    return options


def _registry_path(config: str | None) -> str | None:
    """The registry `serve` will read (as `config.registry.default_path`); None: the shipped one."""
    if config:
        return config
    if env := os.environ.get("MCPGW_CONFIG"):
        return env
    return "servers.toml" if os.path.exists("servers.toml") else None


def is_pipe(fd: int) -> bool:
    """Only pipes and sockets go on the event loop (uvloop aborts on /dev/null, files cannot be polled)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
