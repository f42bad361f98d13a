"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster, 127.0.0.1 only.

`postgres_server` (session scope) runs `initdb` into a temp folder and starts `postgres` on a
free 127.0.0.1 port and a unix socket in that folder, then polls until it accepts connections;
it is stopped and the folder removed after the session. Under xdist each worker is a session of
its own, so each has its own cluster. `running_postgres` is the same without pytest (bench/run.py
uses it). `pg_url` (per test) is a fresh schema in the `mcpgw` database, owned by the `mcpgw` role
that logs in with a password over TCP, as a deployment does; the URL names the schema through
`options`, so tests never see each other's rows.

PostgreSQL refuses to run as root: as root (CI, containers), the server runs as the `postgres`
user the Debian package creates (else `nobody`), in a folder that user owns.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

PASSWORD = "pw-for-tests-0123"
_schemas = itertools.count()


def binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (/usr/lib/postgresql/N/bin), by glob, not PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL is needed (Debian package postgresql; scripts/system-packages installs it)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    port: int
    sockets: Path
    process: subprocess.Popen[bytes]

    def admin(self) -> psycopg.Connection[Any]:
        """The superuser, over the unix socket (trusted there), autocommitting."""
        return psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def url(self, schema: str | None = None, *, password: str = PASSWORD, port: int | None = None) -> str:
        options = f"?options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://mcpgw:{password}@127.0.0.1:{port or self.port}/mcpgw{options}"

    def fresh(self) -> str:
        """The URL of a new, empty schema of the `mcpgw` database."""
        schema = f"t{os.getpid()}_{next(_schemas)}"
        with psycopg.connect(
            host=str(self.sockets), port=self.port, user="postgres", dbname="mcpgw", autocommit=True
        ) as conn:
            conn.execute(f"create schema {schema} authorization mcpgw")
        return self.url(schema)

    def rows(self, url: str, sql: str = "select * from events order by id") -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with psycopg.connect(url, row_factory=dict_row) as conn:
            return list(conn.execute(sql).fetchall())


def _as_owner(folder: Path) -> dict[str, Any]:
    """Popen arguments that run a program as an unprivileged owner of `folder` when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        user = pwd.getpwnam("nobody")
    for path in [folder, *folder.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)
    return {
        "user": user.pw_uid,
        "group": user.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": str(folder)},
    }


def _ready(server: Postgres, log: Path) -> None:
    """Poll until the server accepts connections (a hang guard, not a speed limit)."""
    deadline = time.monotonic() + 120
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"postgres exited with {server.process.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            server.admin().close()
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not accept connections:\n{log.read_text(errors='replace')}"
                ) from exc
            time.sleep(0.05)


@contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[Postgres]:
    """A new cluster in a temp folder, serving until the block ends (then stopped and removed), with
    the `mcpgw` role and database. `durable`: PostgreSQL's own fsync settings (the benchmark); else
    none, as nothing of a test's cluster outlives it."""
    bin_dir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="mcpgw-pg-"))
    data, sockets, log = folder / "data", folder / "sock", folder / "server.log"
    sockets.mkdir()
    log.touch()
    owner = _as_owner(folder)
    subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        ],
        check=True,
        capture_output=True,
        cwd=folder,
        **owner,
    )
    port = _free_port()
    settings = [
        "listen_addresses=127.0.0.1",
        f"unix_socket_directories={sockets}",
        "max_connections=100",
    ]
    if not durable:
        settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                *itertools.chain.from_iterable(("-c", s) for s in settings),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder,
            start_new_session=True,
            **owner,
        )
    server = Postgres(port=port, sockets=sockets, process=process)
    try:
        _ready(server, log)
        with server.admin() as conn:
            conn.execute(f"create role mcpgw login password '{PASSWORD}'")
            conn.execute("create database mcpgw owner mcpgw")
        yield server
    finally:
        # "immediate" shutdown: no checkpoint, as the cluster is deleted next (a hang guard follows)
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(postgres_server: Postgres) -> str:
    """A PostgreSQL URL of a schema of this test's own (the gateway's role, password over TCP)."""
    return postgres_server.fresh()
