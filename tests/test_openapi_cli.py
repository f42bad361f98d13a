"""`mcpgw add-server NAME --openapi URL_OR_FILE` and `list-servers --check` with OpenAPI servers:
added after a check that reads the spec and counts its tools; each kind of bad spec refused with
its reason, the registry left as it was; bad options refused before anything is read."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conftest import SERVERS, background, free_port
from mcpgw import config
from mcpgw.cli import cli
from mcpgw.errors import ConfigError

GOOD_OPERATION = {"get": {"operationId": "ping", "responses": {"200": {"description": "pong"}}}}


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    port = free_port()
    with background([sys.executable, str(SERVERS / "rest_api.py"), str(port)], port=port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    path = tmp_path / "servers.toml"
    path.write_text("# mine\n[gateway]\ntimeout = 30\n")
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_add_server_openapi_checks_and_adds(
    api: str, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TOKEN", "s3cret")
    code, output = run(
        "add-server", "-c", str(registry), "billing", "--openapi", f"{api}/openapi-3.1.yaml",
        "--header", "Authorization=Bearer ${BILLING_TOKEN}", "--include", "GET /invoices*",
    )  # fmt: skip
    assert code == 0, output
    assert "checked billing: 3 tools" in output  # listInvoices, getInvoice, invoiceNote
    entry = config.load(registry)[0].servers["billing"]
    assert entry.kind == "openapi" and entry.include == ["GET /invoices*"]
    assert "Bearer ${BILLING_TOKEN}" in registry.read_text()  # the reference is written, not the token
    result = CliRunner().invoke(cli, ["list-servers", "-c", str(registry), "--check", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    (row,) = listed["servers"] if isinstance(listed, dict) else listed
    assert (row["name"], row["kind"], row["status"], row["tools"]) == ("billing", "openapi", "ready", 3)
    result = CliRunner().invoke(cli, ["list-servers", "-c", str(registry), "--check"])
    assert "billing" in result.output and "openapi" in result.output and "ready" in result.output


def test_a_spec_file_is_written_as_an_absolute_path(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "specs").mkdir()
    spec = {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/ping": GOOD_OPERATION}}
    (tmp_path / "specs" / "ping.json").write_text(json.dumps(spec))
    monkeypatch.chdir(tmp_path)
    code, output = run(
        "add-server",
        "-c",
        str(registry),
        "ping",
        "--openapi",
        "specs/ping.json",
        "--base-url",
        "http://127.0.0.1:9",
    )
    assert code == 0, output
    assert config.load(registry)[0].servers["ping"].openapi == str(tmp_path / "specs" / "ping.json")  # type: ignore[union-attr]


def _spec(**document: Any) -> str:
    return json.dumps({"info": {"title": "t", "version": "1"}, **document})


BAD_SPECS = {
    "missing file": (None, "not found"),
    "neither JSON nor YAML": ("{ this: [is not", "is neither JSON nor YAML"),
    "a string, not a document": ("just some words", "not an OpenAPI document"),
    "Swagger 2.0": (_spec(swagger="2.0", paths={"/ping": GOOD_OPERATION}), "Swagger 2.0 is not supported"),
    "no openapi version": (_spec(paths={"/ping": GOOD_OPERATION}), "it has no 'openapi' version"),
    "OpenAPI 4": (_spec(openapi="4.0.0", paths={"/ping": GOOD_OPERATION}), "OpenAPI 4.0.0 is not supported"),
    "no operations": (_spec(openapi="3.1.0", paths={}), "the spec has no operations"),
    "external $ref": (
        _spec(openapi="3.1.0", paths={"/ping": {"get": {"responses": {"200": {"$ref": "common.yaml#/Ok"}}}}}),
        "$ref 'common.yaml#/Ok' points outside the document",
    ),
    "no server URL": (_spec(openapi="3.1.0", paths={"/ping": GOOD_OPERATION}), "set base_url"),
    "invalid operation": (
        _spec(
            openapi="3.0.3",
            servers=[{"url": "http://127.0.0.1:9"}],
            paths={"/ping": {"get": {"responses": 7}}},
        ),
        "the spec cannot be served: paths./ping.get.responses: Input should be a valid dictionary",
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_a_bad_spec_is_refused_with_its_reason(case: str, registry: Path, tmp_path: Path) -> None:
    content, reason = BAD_SPECS[case]
    spec = tmp_path / "spec.json"
    if content is not None:
        spec.write_text(content)
    before = registry.read_text()
    code, output = run("add-server", "-c", str(registry), "api", "--openapi", str(spec))
    assert code == 2, output
    assert "servers.api." in output and reason in output, output
    assert registry.read_text() == before


def test_include_that_leaves_nothing_is_refused(api: str, registry: Path) -> None:
    code, output = run(
        "add-server",
        "-c",
        str(registry),
        "api",
        "--openapi",
        f"{api}/openapi-3.0.json",
        "--include",
        "GET /nothing*",
    )
    assert code == 2 and "leave none of the spec's operations" in output, output


def test_a_spec_url_that_fails_is_refused(api: str, registry: Path) -> None:
    code, output = run("add-server", "-c", str(registry), "api", "--openapi", f"{api}/no-such-spec.json")
    assert code == 2 and "answered HTTP 404" in output, output
    code, output = run(
        "add-server", "-c", str(registry), "api", "--openapi", f"http://127.0.0.1:{free_port()}/spec"
    )
    assert code == 2 and "cannot fetch the spec" in output, output


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--openapi", "spec.json", "--include", "FETCH /x"], "must be 'METHOD /path-glob'"),
        (["--openapi", "spec.json", "--base-url", "ftp://host"], "is not an http:// or https:// URL"),
        (["--openapi", "spec.json", "--url", "http://h/mcp"], "give one of a command"),
        (["--url", "http://h/mcp", "--include", "GET /x"], "go with --openapi"),
        (["--openapi", "ftp://host/spec.json"], "is not an http(s) URL or a file path"),
    ],
)
def test_bad_options_are_refused_before_anything_is_read(
    args: list[str], reason: str, registry: Path
) -> None:
    before = registry.read_text()
    code, output = run("add-server", "-c", str(registry), "api", *args)
    assert code == 2 and reason in output, output
    assert registry.read_text() == before


@pytest.mark.parametrize(
    ("entry", "key", "reason"),
    [
        ('openapi = "s.json"\nurl = "http://h/mcp"', "servers.a", "has both 'openapi' and 'url'"),
        ('openapi = "s.json"\ncommand = "x"', "servers.a", "has both 'openapi' and 'command'"),
        ('openapi = "s.json"\nenv = { A = "1" }', "servers.a.env", "applies to command servers"),
        (
            'openapi = "s.json"\n[servers.a.oauth]\nclient_id = "c"\nclient_secret = "s"',
            "servers.a.oauth",
            "go in 'headers'",
        ),
        ('openapi = ""', "servers.a.openapi", "'openapi' is empty"),
        (
            'openapi = "s.json"\nexclude = ["GET invoices"]',
            "servers.a.exclude",
            "must be 'METHOD /path-glob'",
        ),
        ('openapi = "s.json"\nbogus = 1', "servers.a.bogus", "unknown key"),
    ],
)
def test_a_bad_openapi_entry_names_its_key_and_reason(
    entry: str, key: str, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / "servers.toml"
    path.write_text(f"[servers.a]\n{entry}\n")
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert caught.value.key == key and reason in caught.value.reason, str(caught.value)


def test_a_private_spec_gets_the_headers_only_from_the_apis_own_origin(
    api: str, registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BILLING_TOKEN", "s3cret")
    spec, header = f"{api}/private/openapi.json", "Authorization=Bearer ${BILLING_TOKEN}"
    # the API is elsewhere: its token is not sent with the spec's request
    elsewhere = ("--base-url", f"http://localhost:{api.rsplit(':', 1)[1]}")
    code, output = run(
        "add-server", "-c", str(registry), "api", "--openapi", spec, "--header", header, *elsewhere
    )
    assert code == 2 and "answered HTTP 401 (the server's headers go with it only when base_url" in output, (
        output
    )
    code, output = run(
        "add-server", "-c", str(registry), "api", "--openapi", spec, "--header", header, "--base-url", api
    )
    assert code == 0 and "checked api: 9 tools" in output, output
