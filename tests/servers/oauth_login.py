"""An OAuth 2.1 authorization server (Authlib) and two MCP servers that want its tokens, on one port.

For the upstream-login tests (`tests/test_login.py`): `mcpgw login` against a server the way
GitHub, Linear or Notion are protected. Run as `oauth_login.py PORT [--token-ttl SECONDS]`.

  /as                     the authorization server (issuer http://127.0.0.1:PORT/as), built on
                          Authlib's `AuthorizationServer`: RFC 8414 metadata at
                          /.well-known/oauth-authorization-server/as, RFC 7591 registration
                          (/as/register), the authorization code with PKCE S256 required
                          (/as/authorize, approving at once as user "alice", or as the one
                          the browser's `X-Test-User` header names), refresh tokens
                          (/as/token), RFC 7009 revocation (/as/revoke). Access tokens carry the
                          RFC 8707 `resource` they were asked for.
  /mcp, /other/mcp        two MCP servers (the mcp SDK's lowlevel server, tool `whoami`: the
                          user whose token it was called with), each
                          with its RFC 9728 metadata; each takes only a live token issued for its
                          own URL, else 401 with `WWW-Authenticate: Bearer resource_metadata=..`.
  cc-client / cc-secret   a client registered by hand for the client-credentials grant (basic auth)
  /scoped/mcp             like /mcp, but after POST /admin/want-admin it also wants scope `admin`
                          (403 insufficient_scope, scope="mcp admin": a step-up), until
                          POST /admin/want-admin {"on": false}
  /lenient/mcp            like /mcp, but lets `initialize` (no session yet) in without a token
  /keyed/mcp              401 without any challenge: a server wanting an API key, not OAuth
  /legacy/sse             the legacy SSE transport (FastMCP), guarded the same way
  POST /admin/expire      every access token expires now (refresh tokens stay good)
  GET  /admin/stats       counters: registrations, grants by type, revocations, refused calls,
                          the Authorization headers /other/mcp was sent, and those of every
                          server (`seen`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import mcp_types as types
import uvicorn
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7591 import ClientRegistrationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from fastmcp import FastMCP
from mcp.server.lowlevel.server import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

STATS: Counter[str] = Counter()
CC_CLIENT, CC_SECRET = "cc-client", "cc-secret"
"""The confidential client of the client-credentials grant."""
SENT_TO_OTHER: list[str] = []
SEEN: defaultdict[str, set[str]] = defaultdict(set)
"""Every Authorization header each MCP server was sent."""
SCOPED = {"on": False}
"""Whether /scoped/mcp wants the `admin` scope too (403 insufficient_scope without it)."""


class Client(ClientMixin):
    def __init__(self, client_id: str, secret: str | None, metadata: dict[str, Any]) -> None:
        self.client_id, self.client_secret, self.metadata = client_id, secret, metadata

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return str(self.metadata["redirect_uris"][0])

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.metadata.get("redirect_uris", [])

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.metadata.get("token_endpoint_auth_method", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.metadata.get("grant_types", ["authorization_code", "refresh_token"])


class Payload(OAuth2Payload):
    def __init__(self, values: dict[str, list[str]]) -> None:
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return {k: v[0] for k, v in self._values.items()}

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return defaultdict(list, self._values)


class FormRequest(OAuth2Request):
    """A Starlette request, its form already read (Authlib's grants are synchronous)."""

    def __init__(self, request: Request, form: dict[str, list[str]]) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        values: dict[str, list[str]] = defaultdict(list)
        for key, value in request.query_params.multi_items():
            values[key].append(value)
        for key, items in form.items():
            values[key].extend(items)
        self.payload = Payload(dict(values))
        self._args = dict(request.query_params)
        self._form = {k: v[0] for k, v in form.items()}

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class JsonBody:
    def __init__(self, request: Request, body: dict[str, Any]) -> None:
        self.method, self.uri, self.headers = request.method, str(request.url), dict(request.headers)
        self.payload = type("P", (), {"data": body})()


class InvalidTargetError(OAuth2Error):
    error = "invalid_target"
    description = "the grant is not for this resource"


class _Asgi:
    """An ASGI callable Starlette's `Route` serves for every method (a plain function would be GET only)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


class Store:
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.clients: dict[str, Client] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}


class Token:
    """An issued token as Authlib's refresh and revocation grants see it."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def check_client(self, client: Client) -> bool:
        return bool(self.record["client_id"] == client.client_id)

    def get_scope(self) -> str:
        return str(self.record.get("scope") or "")

    def is_revoked(self) -> bool:
        return bool(self.record.get("revoked"))

    def is_expired(self) -> bool:
        return False

    def get_user(self) -> str:
        return str(self.record.get("user") or "alice")


class AuthCode:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.code_challenge = record.get("code_challenge")
        self.code_challenge_method = record.get("code_challenge_method")

    def get_redirect_uri(self) -> str:
        return str(self.record["redirect_uri"])

    def get_scope(self) -> str:
        return str(self.record.get("scope") or "")

    def is_expired(self) -> bool:
        return False


def whoami() -> str:
    """Who called."""
    return "alice"


def build(base: str, ttl: int) -> Starlette:
    store = Store(ttl)
    issuer = f"{base}/as"

    class Server_(AuthorizationServer):
        def query_client(self, client_id: str) -> Client | None:
            return store.clients.get(client_id)

        def save_token(self, token: dict[str, Any], request: Any) -> None:
            resource = request.payload.data.get("resource") or getattr(request, "resource", None)
            if request.refresh_token is not None:
                resource = resource or request.refresh_token.record.get("resource")
            record = {
                "client_id": request.client.client_id,
                "scope": token.get("scope"),
                "resource": resource,
                "user": request.user,
            }
            store.access[token["access_token"]] = {**record, "expires": time.time() + ttl}
            if "refresh_token" in token:
                store.refresh[token["refresh_token"]] = dict(record)

        def create_oauth2_request(self, request: Any) -> Any:
            return request

        def create_json_request(self, request: Any) -> Any:
            return request

        def handle_response(self, status: int, body: Any, headers: Any) -> Response:
            content = json.dumps(body) if isinstance(body, dict) else (body or "")
            return Response(content, status_code=status, headers=dict(headers))

        def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
            pass

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ]

        def save_authorization_code(self, code: str, request: Any) -> None:
            data = request.payload.data
            store.codes[code] = {
                "client_id": request.client.client_id,
                "redirect_uri": data.get("redirect_uri"),
                "scope": data.get("scope"),
                "resource": data.get("resource"),
                "code_challenge": data.get("code_challenge"),
                "code_challenge_method": data.get("code_challenge_method"),
                "user": request.user,
            }

        def query_authorization_code(self, code: str, client: Client) -> AuthCode | None:
            record = store.codes.get(code)
            return AuthCode(record) if record and record["client_id"] == client.client_id else None

        def delete_authorization_code(self, authorization_code: AuthCode) -> None:
            for code, record in list(store.codes.items()):
                if record is authorization_code.record:
                    del store.codes[code]

        def authenticate_user(self, authorization_code: AuthCode) -> str:
            return str(authorization_code.record.get("user") or "alice")

    class RefreshGrant(grants.RefreshTokenGrant):
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ]
        INCLUDE_NEW_REFRESH_TOKEN = True

        def validate_token_request(self) -> None:
            super().validate_token_request()
            # RFC 8707 §2.2: a refresh may only ask for a resource the grant was for.
            asked = self.request.payload.data.get("resource")
            if asked and asked != self.request.refresh_token.record.get("resource"):
                raise InvalidTargetError()

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            record = store.refresh.get(refresh_token)
            return Token(record) if record and not record.get("revoked") else None

        def authenticate_user(self, refresh_token: Token) -> str:
            return refresh_token.get_user()

        def revoke_old_credential(self, refresh_token: Token) -> None:
            refresh_token.record["revoked"] = True

    class CredentialsGrant(grants.ClientCredentialsGrant):
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]

    class Revocation(RevocationEndpoint):
        CLIENT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post", "none"]

        def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
            record = store.refresh.get(token_string) or store.access.get(token_string)
            return Token(record) if record else None

        def revoke_token(self, token: Token, request: Any) -> None:
            token.record["revoked"] = True
            STATS["revocations"] += 1

    class Registration(ClientRegistrationEndpoint):
        def authenticate_token(self, request: Any) -> str:
            return "anyone"  # open registration, as MCP servers offer it

        def resolve_public_key(self, request: Any) -> None:
            return None

        def get_server_metadata(self) -> dict[str, Any]:
            return metadata()

        def save_client(
            self, client_info: dict[str, Any], client_metadata: dict[str, Any], request: Any
        ) -> Client:
            client = Client(client_info["client_id"], client_info.get("client_secret"), client_metadata)
            if client_metadata.get("token_endpoint_auth_method") == "none":
                client.client_secret = None
            store.clients[client.client_id] = client
            STATS["registrations"] += 1
            return client

    server = Server_()
    server.register_token_generator(
        "default",
        BearerTokenGenerator(
            access_token_generator=lambda **_: secrets.token_urlsafe(24),
            refresh_token_generator=lambda **_: secrets.token_urlsafe(24),
            expires_generator=lambda client, grant_type: ttl,
        ),
    )
    server.register_grant(CodeGrant, [CodeChallenge(required=True)])
    server.register_grant(RefreshGrant)
    server.register_grant(CredentialsGrant)
    # A confidential client registered by hand, for the client-credentials grant.
    store.clients[CC_CLIENT] = Client(
        CC_CLIENT,
        CC_SECRET,
        {
            "redirect_uris": [],
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
        },
    )
    server.register_endpoint(Revocation)
    server.register_endpoint(Registration)

    def metadata() -> dict[str, Any]:
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "registration_endpoint": f"{issuer}/register",
            "revocation_endpoint": f"{issuer}/revoke",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "scopes_supported": ["mcp"],
        }

    async def form_of(request: Request) -> dict[str, list[str]]:
        form = await request.form()
        values: dict[str, list[str]] = defaultdict(list)
        for key, value in form.multi_items():
            values[key].append(str(value))
        return dict(values)

    async def as_metadata(request: Request) -> JSONResponse:
        return JSONResponse(metadata())

    async def authorize(request: Request) -> Response:
        STATS["authorizations"] += 1
        oauth_request = FormRequest(request, {})
        # The user who approves: the test's browser names it (default alice).
        user = request.headers.get("x-test-user", "alice")
        return server.create_authorization_response(oauth_request, grant_user=user)

    async def token(request: Request) -> Response:
        oauth_request = FormRequest(request, await form_of(request))
        STATS[f"grant_{oauth_request.payload.data.get('grant_type')}"] += 1
        return server.create_token_response(oauth_request)

    async def revoke(request: Request) -> Response:
        return server.create_endpoint_response("revocation", FormRequest(request, await form_of(request)))

    async def register(request: Request) -> Response:
        return server.create_endpoint_response("client_registration", JsonBody(request, await request.json()))

    async def expire(request: Request) -> JSONResponse:
        for record in store.access.values():
            record["expires"] = 0
        return JSONResponse({})

    async def stats(request: Request) -> JSONResponse:
        seen = {path: sorted(values) for path, values in SEEN.items()}
        return JSONResponse({**STATS, "sent_to_other": SENT_TO_OTHER, "seen": seen})

    def resource(path: str, sse: Any = None) -> tuple[Route, Any, Any]:
        url = f"{base}{path}"
        mcp: Server[Any] = Server(f"protected{path}", on_list_tools=list_tools, on_call_tool=call_tool)
        app = sse or mcp.streamable_http_app(streamable_http_path=path)
        prm = f"{base}/.well-known/oauth-protected-resource{path}"

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
            bearer = headers.get("authorization", "")
            if path == "/other/mcp" and bearer:
                SENT_TO_OTHER.append(bearer)
            if bearer:
                SEEN[path].add(bearer)
            record = (
                store.access.get(bearer.removeprefix("Bearer ")) if bearer.startswith("Bearer ") else None
            )
            live = record is not None and not record.get("revoked") and record["expires"] > time.time()
            if path == "/keyed/mcp":  # wants an API key mcpgw does not have: no OAuth at all
                await Response("no API key", status_code=401)(scope, receive, send)
                return
            if sse is not None and scope["method"] != "GET" and scope["path"].endswith("/sse"):
                await app(scope, receive, send)  # as a routed app answers: 405 before any auth
                return
            if path == "/lenient/mcp" and "mcp-session-id" not in headers:
                await app(scope, receive, send)  # `initialize` is let in without a token
                return
            if not live or record is None or record.get("resource") != url:
                STATS["refused"] += 1
                challenge = f'Bearer resource_metadata="{prm}"'
                if bearer:
                    challenge += ', error="invalid_token"'
                await Response(status_code=401, headers={"WWW-Authenticate": challenge})(scope, receive, send)
                return
            if path == "/scoped/mcp" and SCOPED["on"] and "admin" not in (record.get("scope") or "").split():
                STATS["insufficient_scope"] += 1
                challenge = f'Bearer error="insufficient_scope", scope="mcp admin", resource_metadata="{prm}"'
                await Response(status_code=403, headers={"WWW-Authenticate": challenge})(scope, receive, send)
                return
            await app(scope, receive, send)

        async def prm_doc(request: Request) -> JSONResponse:
            return JSONResponse(
                {"resource": url, "authorization_servers": [issuer], "scopes_supported": ["mcp"]}
            )

        mount = Mount("/legacy", _Asgi(guarded)) if sse is not None else Route(path, _Asgi(guarded))
        return Route(f"/.well-known/oauth-protected-resource{path}", prm_doc), mount, mcp

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        schema = {"type": "object", "properties": {}}
        return types.ListToolsResult(
            tools=[types.Tool(name="whoami", description="Who called.", input_schema=schema)]
        )

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        # Whose token the call came with (the user who approved its login).
        bearer = ctx.request.headers.get("authorization", "") if ctx.request is not None else ""
        record = store.access.get(bearer.removeprefix("Bearer ")) or {}
        user = str(record.get("user") or "alice")
        return types.CallToolResult(content=[types.TextContent(type="text", text=user)])

    main_prm, main_mount, main_mcp = resource("/mcp")
    other_prm, other_mount, other_mcp = resource("/other/mcp")
    scoped_prm, scoped_mount, scoped_mcp = resource("/scoped/mcp")
    lenient_prm, lenient_mount, lenient_mcp = resource("/lenient/mcp")
    _, keyed_mount, _ = resource("/keyed/mcp")
    legacy = FastMCP("legacy")
    legacy.tool(whoami)
    legacy_app = legacy.http_app(transport="sse", path="/sse")
    sse_prm, sse_mount, _ = resource("/legacy/sse", sse=legacy_app)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with (
            main_mcp.session_manager.run(),
            other_mcp.session_manager.run(),
            scoped_mcp.session_manager.run(),
            lenient_mcp.session_manager.run(),
            legacy_app.router.lifespan_context(legacy_app),
        ):
            yield

    async def want_admin(request: Request) -> JSONResponse:
        body = await request.body()
        SCOPED["on"] = bool(json.loads(body).get("on", True)) if body else True
        return JSONResponse({})

    routes = [
        Route("/.well-known/oauth-authorization-server/as", as_metadata),
        Route("/as/authorize", authorize),
        Route("/as/token", token, methods=["POST"]),
        Route("/as/revoke", revoke, methods=["POST"]),
        Route("/as/register", register, methods=["POST"]),
        Route("/admin/expire", expire, methods=["POST"]),
        Route("/admin/stats", stats),
        Route("/admin/want-admin", want_admin, methods=["POST"]),
        main_prm,
        other_prm,
        scoped_prm,
        lenient_prm,
        sse_prm,
        main_mount,
        other_mount,
        scoped_mount,
        lenient_mount,
        sse_mount,
        keyed_mount,
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--token-ttl", type=int, default=3600)
    args = parser.parse_args()
    app = build(f"http://127.0.0.1:{args.port}", args.token_ttl)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
