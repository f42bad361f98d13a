"""The conformance suite's client under test: mcpgw, with the scenario's server as its one upstream.

The suite (`conformance client --command "python tests/conformance_client.py"`) starts a scenario
server and runs this script with its URL as the last argument, the scenario's name in
`MCP_CONFORMANCE_SCENARIO`, its protocol revision in `MCP_CONFORMANCE_PROTOCOL_VERSION` and its
arguments, if any, in `MCP_CONFORMANCE_CONTEXT`. The script builds the gateway `mcpgw serve` builds
(`build_gateway`, default configuration: `era = "auto"`, that URL as its one upstream, names
unprefixed) and drives it as a user's client would: it lists the tools, resources and prompts
mcpgw serves and uses each, with the scenario's arguments where the context names them. Every
request the scenario server sees is one mcpgw sent as a client.

The user's client is the mcp SDK's `Client` over a wire to the gateway (as over stdio), of the
scenario's era. It lists tools raw: the SDK's own 2026-07-28 list filtering would otherwise hide
what mcpgw served, and that is what the invalid-tool scenario checks. For the `auth/*` scenarios it
first logs in as `mcpgw login` does (the context's `client_id`/`client_secret` as the server's
`[login]` table), its browser following the authorization URL: the scenario's authorization server
approves at once; the client-credentials scenarios get an `[oauth]` table (discovery) instead.
Exits 1, saying why on stderr, if the upstream never became ready (after one more login where it
said "needs login", as a user told so would). A link mcpgw hands the client during a call (its login
renewed: more scope, a new authorization server) is opened by the same browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import traceback
from typing import Any

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.session import ClientRequestContext
from pydantic import TypeAdapter

from mcpgw.assembly import build_gateway
from mcpgw.config import Registry, validate
from mcpgw.errors import GatewayError, NeedsLogin
from mcpgw.server.handlers import build_server
from mcpgw.server.notify import notification_options
from mcpgw.upstream import login
from parity import wire

SERVER = "scenario"
CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"
MODERN = "2026-07-28"
NEEDS_LOGIN = 3
"""What `run_gateway` returns when the upstream wants a new login (as `list-servers --check` exits)."""
_RAW = TypeAdapter(dict[str, Any])
SCHEMA_ECHO = ("json_schema_2020_12_tool", "json_schema_echo")
"""json-schema-2020-12-preservation: the focal tool's schema, as listed, goes back through the echo tool."""


def sample_value(schema: Any) -> Any:
    """A value a required parameter of this schema accepts, for tools the context gives no arguments for."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return {"integer": 1, "number": 1, "boolean": True, "object": {}, "array": [], "null": None}.get(
        kind, "value"
    )


def arguments_for(tool: dict[str, Any], given: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if tool["name"] in given:
        return given[tool["name"]]
    schema = tool.get("inputSchema") or {}
    properties = schema.get("properties") or {}
    return {name: sample_value(properties.get(name)) for name in schema.get("required") or []}


async def elicit(context: ClientRequestContext, params: Any) -> types.ElicitResult:
    """Accept the form as a user's client shows it: each field filled with its schema `default`
    (SEP-1034), so the defaults the upstream sent must reach this client through mcpgw intact.
    A link (URL mode: mcpgw's login renewed during a call) is opened in the user's browser."""
    if getattr(params, "mode", None) == "url":
        await browse(str(params.url))
        return types.ElicitResult(action="accept")
    schema = getattr(params, "requested_schema", None) or {}
    properties = schema.get("properties") or {} if isinstance(schema, dict) else {}
    content = {
        name: field["default"]
        for name, field in properties.items()
        if isinstance(field, dict) and "default" in field
    }
    return types.ElicitResult(action="accept", content=content)


async def sample(context: ClientRequestContext, params: Any) -> types.CreateMessageResult:
    return types.CreateMessageResult(
        role="assistant", content=types.TextContent(type="text", text="ok"), model="conformance"
    )


async def use(client: Client, scenario: str, context: dict[str, Any]) -> None:
    """List and use everything the gateway serves, as the scenario's reference client does."""
    given = {call["name"]: call.get("arguments") or {} for call in context.get("toolCalls") or []}
    listed = await client.session.send_request(types.ListToolsRequest(), _RAW)
    tools: list[dict[str, Any]] = listed.get("tools") or []
    print("listed tools:", [t["name"] for t in tools], file=sys.stderr)
    by_name = {t["name"]: t for t in tools}
    focal, echo = SCHEMA_ECHO
    if focal in by_name and echo in by_name:
        given[echo] = {"schema": by_name[focal]["inputSchema"]}
    for tool in tools:
        if scenario == "json-schema-ref-no-deref":
            break  # the reference client only lists
        try:
            result = await client.call_tool(tool["name"], arguments_for(tool, given))
            print(f"called {tool['name']}: error={result.is_error}", file=sys.stderr)
        except Exception as exc:  # a scenario may answer with errors; the suite judges what it saw
            print(f"called {tool['name']}: {exc!r}", file=sys.stderr)
    capabilities = client.server_capabilities
    if capabilities.resources is not None:
        for resource in (await client.list_resources()).resources:
            await client.read_resource(resource.uri)
    if capabilities.prompts is not None:
        for prompt in (await client.list_prompts()).prompts:
            required = {a.name: "value" for a in prompt.arguments or [] if a.required}
            await client.get_prompt(prompt.name, required)


async def browse(authorization_url: str) -> None:
    """The user's browser: the scenario's authorization server approves at once and redirects to
    mcpgw's loopback receiver."""
    async with httpx2.AsyncClient(follow_redirects=True, timeout=60) as browser:
        landed = await browser.get(authorization_url)
        print(f"browser: {landed.status_code} at {landed.url.copy_with(query=None)}", file=sys.stderr)


async def log_in(registry: Registry, url: str) -> None:
    """`mcpgw login`, non-interactively: what a user runs once before the gateway serves."""
    try:
        found = await login.login(
            SERVER, registry.servers[SERVER], url, None, registry.gateway, os.environ, open_url=browse
        )  # type: ignore[arg-type]
        print(f"logged in: scope {found.scope}", file=sys.stderr)
    except GatewayError as exc:
        print(f"login failed: {exc}", file=sys.stderr)


async def authorization_server(url: str) -> str:
    """The issuer the upstream's resource metadata names (RFC 9728, path-based), as an operator
    configuring an enterprise-managed server would look it up once."""
    parts = httpx2.URL(url)
    metadata = parts.copy_with(path=f"/.well-known/oauth-protected-resource{parts.path}")
    async with httpx2.AsyncClient(timeout=30) as http:
        return str((await http.get(str(metadata))).json()["authorization_servers"][0])


async def main(url: str) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    # Default settings, but for two a loaded test machine needs: no restart of an upstream that
    # refuses us (the OAuth scenarios), and a start-up limit no busy machine reaches.
    server: dict[str, Any] = {"url": url, "namespace": "", "restart": False}
    settings: dict[str, Any] = {"startup_timeout": 120}
    with tempfile.TemporaryDirectory() as tokens:
        given = {k: context[k] for k in ("client_id", "client_secret", "issuer") if k in context}
        if "private_key_pem" in context:  # private_key_jwt client authentication (RFC 7523)
            given["private_key"] = context["private_key_pem"]
            given["signing_algorithm"] = context.get("signing_algorithm", "RS256")
        if "valid_jwt" in context:  # the workload's own JWT: the jwt-bearer grant (RFC 7523)
            given["assertion"] = context["valid_jwt"]
        if "idp_id_token" in context:  # enterprise-managed (SEP-990): the operator knows the issuer
            given["issuer"] = await authorization_server(url)
            given["enterprise"] = {
                "idp_token_url": context["idp_token_endpoint"],
                "idp_client_id": context["idp_client_id"],
                "id_token": context["idp_id_token"],
            }
        # A machine's own credentials (client credentials, a workload's JWT) or a user's login (the rest).
        granted = any(k in given for k in ("client_secret", "private_key", "assertion")) and (
            "client-credentials" in scenario or "assertion" in given or "enterprise" in given
        )
        if granted:
            server["oauth"] = given
        elif scenario.startswith("auth/"):
            settings["tokens_dir"] = tokens
            given.pop("issuer", None)
            # The client ID metadata document the suite's servers know mcpgw by, used where one
            # advertises `client_id_metadata_document_supported` (else mcpgw registers).
            server["login"] = {**given, "client_metadata_url": CLIENT_METADATA_URL}
        registry = validate({"gateway": settings, "servers": {SERVER: server}}, source="conformance")
        if scenario.startswith("auth/") and not granted:
            await log_in(registry, url)
        done = await run_gateway(registry, scenario, version, context)
        if done == NEEDS_LOGIN and scenario.startswith("auth/") and not granted:
            # The login went stale before the gateway started (its authorization server moved):
            # the user is told "needs login", logs in again, and starts the gateway again.
            await log_in(registry, url)
            done = await run_gateway(registry, scenario, version, context)
        return done


async def run_gateway(registry: Registry, scenario: str, version: str, context: dict[str, Any]) -> int:
    gateway = build_gateway(registry, audit=None).gateway
    async with gateway.running():
        await gateway.wait_started()
        upstream = gateway.upstreams[SERVER]
        if upstream.state != "ready":
            print(f"upstream {upstream.state}: {upstream.error}", file=sys.stderr)
            return NEEDS_LOGIN if NeedsLogin.marker in (upstream.error or "") else 1
        server, _ = build_server(gateway)
        options = server.create_initialization_options(notification_options())
        mode = "auto" if version == MODERN else "legacy"
        async with Client(
            wire(server, options=options),
            mode=mode,
            cache=None,
            elicitation_callback=elicit,
            sampling_callback=sample,
        ) as client:
            await use(client, scenario, context)
    return 0


def serve(path: str) -> None:
    """The resident driver: imports done once, then one fork per scenario (`conformance_shim.py`
    connects, sends its arguments and environment; the fork runs `main` with them, its output and
    exit code going back over the connection). No thread runs here, so forking is safe."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(64)
        print("ready", flush=True)
        while True:
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                run_forked(connection)
            connection.close()


def run_forked(connection: socket.socket) -> None:
    code = 1
    try:
        request = json.loads(connection.makefile("rb").readline())
        os.environ.clear()
        os.environ.update(request["env"])
        os.dup2(connection.fileno(), 1)
        os.dup2(connection.fileno(), 2)
        code = anyio.run(main, request["argv"][-1])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            connection.sendall(b"\0EXIT %d" % code)
        os._exit(code)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        sys.exit(anyio.run(main, sys.argv[-1]))
