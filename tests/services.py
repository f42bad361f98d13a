"""Real services the scale-out tests start on 127.0.0.1: redis-server and nginx, from Debian.

Each runs in a temp folder on a free port, is polled until it answers (never slept for), and is
stopped with its process group when the block ends. CI installs the programs through
`scripts/system-packages` (`scripts/debian-packages.txt`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from conftest import PROCESS_LIMIT, free_port, stop_group, wait_for_port

REDIS_SERVER = Path("/usr/bin/redis-server")
NGINX = Path("/usr/sbin/nginx")
NGINX_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


@contextmanager
def redis_server(home: Path) -> Iterator[str]:
    """A redis-server of its own (no persistence); yields its `redis://` URL once it answers PING."""
    import redis

    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = _service(
        [str(REDIS_SERVER), *options, "--dir", str(home), "--logfile", str(home / "redis.log")]
    )
    try:
        wait_for_port(port, process=process)
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + PROCESS_LIMIT
        while True:  # listening comes before loading: poll until it answers
            try:
                if client.ping():
                    break
            except redis.exceptions.BusyLoadingError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not answer PING")
            time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_group(process)


@contextmanager
def nginx(home: Path, backends: Mapping[str, int]) -> Iterator[int]:
    """nginx running the shipped `deploy/nginx.conf`, its `NAME:8765` servers replaced by the local
    ports in `backends`; yields the port it listens on."""
    port = free_port()
    text = NGINX_CONF.read_text()
    for name, backend in backends.items():
        text = text.replace(f"{name}:8765", f"127.0.0.1:{backend}")
    text = re.sub(r"listen 8080;", f"listen 127.0.0.1:{port};", text)
    with running_nginx(home, text, port):
        yield port


@contextmanager
def running_nginx(home: Path, conf_text: str, port: int) -> Iterator[None]:
    """nginx on `conf_text` (a whole configuration, with an `http {` block), in the foreground, with
    its pid, error log and temp folders in `home`, until the block ends; from when `port` listens."""
    # Debian's nginx keeps request bodies and proxied responses under /var/lib/nginx: here, the temp folder.
    temp = "".join(
        f"    {kind}_temp_path {home / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    home.mkdir(parents=True, exist_ok=True)
    conf = home / "nginx.conf"
    conf.write_text(conf_text.replace("http {\n", "http {\n" + temp, 1))
    main = f"daemon off; pid {home / 'nginx.pid'};" + (" user root;" if os.geteuid() == 0 else "")
    process = _service(
        [str(NGINX), "-p", str(home), "-e", str(home / "error.log"), "-c", str(conf), "-g", main]
    )
    try:
        wait_for_port(port, process=process)
        yield
    finally:
        stop_group(process)


def _service(command: list[str]) -> subprocess.Popen[bytes]:
    """A service in a process group of its own (`stop_group` stops it and anything it forked), off
    the test's terminal (redis and nginx log to files in their folder)."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
