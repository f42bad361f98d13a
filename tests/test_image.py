"""The container files agree with the tree: what they copy and mount exists, the registry they serve loads.

Building the image needs a Docker daemon, which the test machines do not have; these checks are
what can fail without one (a renamed file, an edit that breaks the example registry).
"""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import yaml

from conftest import ROOT
from mcpgw.config import validate


def ignored(path: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(path, p) or path.split("/")[0] == p for p in patterns)


def test_the_dockerfile_copies_what_the_context_holds() -> None:
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.extend(words[1:-1])
    assert sources == ["pyproject.toml", "README.md", "src"]
    for source in sources:
        assert (ROOT / source).exists() and not ignored(source), source
    # The build is from the source tree, nothing the image needs is filtered out of the context.
    assert ignored("tests") and ignored(".venv") and not ignored("src/mcpgw/default_servers.toml")


def test_compose_serves_the_example_registry_it_mounts() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    gateway = compose["services"]["mcpgw"]
    mounts = dict(volume.split(":")[:2] for volume in gateway["volumes"])
    assert mounts["./deploy"] == "/etc/mcpgw"
    config = Path(gateway["environment"]["MCPGW_CONFIG"])
    local = ROOT / "deploy" / config.relative_to("/etc/mcpgw")
    registry = validate(tomllib.loads(local.read_text()), source=str(local))
    assert set(registry.servers) == {"time", "everything"}
    assert "mcpgw:*" in registry.gateway.allowed_hosts  # Prometheus scrapes it by its service name
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["static_configs"][0]["targets"] == ["mcpgw:8765"]
