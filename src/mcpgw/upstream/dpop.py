"""DPoP (RFC 9449): tokens bound to a key of mcpgw's, proven on every request that carries them.

Owns: `DPoP`, the proof-of-possession side of a login whose authorization server offers it
(`dpop_signing_alg_values_supported` with ES256 in its metadata): one P-256 key per login, kept
with its tokens (owner-only, `tokens.TokenFile`), a proof (a `dpop+jwt` signed with joserfc) on
each token request and on each request to the server with the token (then `Authorization: DPoP`
and the token's hash, `ath`), and the nonces the servers hand out (`DPoP-Nonce`), asked for once
per request (`use_dpop_nonce`).

The mcp SDK (2.3) knows nothing of DPoP: its token model takes only Bearer tokens, and it sends
`Authorization: Bearer`. `LoginAuth` runs the SDK's flow and calls these hooks on what passes
between it and the wire: a DPoP-bound token answer reaches the SDK as Bearer, and the header it
sets goes out as DPoP.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx2

from mcpgw.upstream.tokens import TokenFile

ALGORITHM = "ES256"
_METADATA_PATHS = ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class DPoP:
    """The DPoP key of one login, its proofs, and the servers' nonces."""

    def __init__(self, store: TokenFile) -> None:
        self.store = store
        self._key: Any = None
        self._nonces: dict[str, str] = {}

    @property
    def offered(self) -> bool:
        """Whether the authorization server takes DPoP proofs we can sign (as its metadata said)."""
        return bool(self.store.read().get("dpop_offered"))

    async def metadata_answer(self, request: httpx2.Request, response: httpx2.Response) -> None:
        """Note from the authorization server's metadata whether it offers DPoP (the SDK's
        metadata model drops `dpop_signing_alg_values_supported`)."""
        path = urlsplit(str(request.url)).path
        if response.status_code != 200 or not path.startswith(_METADATA_PATHS):
            return
        await response.aread()
        try:
            metadata = json.loads(response.content)
        except ValueError:
            return
        if isinstance(metadata, dict) and "token_endpoint" in metadata:
            algorithms = metadata.get("dpop_signing_alg_values_supported") or []
            self.store.update(dpop_offered=isinstance(algorithms, list) and ALGORITHM in algorithms)

    @property
    def bound(self) -> bool:
        """The stored token is DPoP-bound (the authorization server said so when it issued it)."""
        return bool(self.store.read().get("dpop_bound"))

    def _signing_key(self) -> Any:
        from joserfc.jwk import ECKey

        if self._key is None:
            stored = self.store.read().get("dpop_key")
            if isinstance(stored, dict):
                self._key = ECKey.import_key(stored)
            else:
                self._key = ECKey.generate_key("P-256", private=True)
                self.store.update(dpop_key=self._key.as_dict(private=True))
        return self._key

    def proof(self, method: str, url: str, *, access_token: str | None = None) -> str:
        from joserfc import jwt

        key = self._signing_key()
        parts = urlsplit(url)
        claims: dict[str, Any] = {
            "jti": uuid.uuid4().hex,
            "htm": method,
            "htu": f"{parts.scheme}://{parts.netloc}{parts.path}",  # no query, no fragment (§4.2)
            "iat": int(time.time()),
        }
        nonce = self._nonces.get(_origin(url))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        header = {"typ": "dpop+jwt", "alg": ALGORITHM, "jwk": key.as_dict(private=False)}
        return jwt.encode(header, claims, key)

    # --- hooks for `LoginAuth` -----------------------------------------------------------------

    def sign_token_request(self, request: httpx2.Request) -> None:
        request.headers["DPoP"] = self.proof(request.method, str(request.url))

    def sign_resource_request(self, request: httpx2.Request) -> None:
        """`Authorization: Bearer X` (as the SDK sets it) becomes `DPoP X`, with a fresh proof."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "dpop") or not token:
            return
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.proof(request.method, str(request.url), access_token=token)

    async def wants_nonce(self, request: httpx2.Request, response: httpx2.Response) -> bool:
        """Whether `response` asks for the request again with the nonce it carries (§8, §9)."""
        nonce = response.headers.get("dpop-nonce")
        if nonce is None or "DPoP" not in request.headers:
            return False
        known = self._nonces.get(_origin(str(request.url)))
        self._nonces[_origin(str(request.url))] = nonce
        if response.status_code == 401:
            asked = "use_dpop_nonce" in response.headers.get("www-authenticate", "")
        elif response.status_code == 400:
            await response.aread()
            asked = b"use_dpop_nonce" in response.content
        else:
            return False
        return asked and nonce != known

    async def token_answer(self, response: httpx2.Response) -> httpx2.Response:
        """A token response as the SDK takes it: a DPoP-bound token is recorded as bound and
        handed on as Bearer (the SDK's token model takes no other type)."""
        if response.status_code != 200:
            return response
        await response.aread()
        try:
            body = json.loads(response.content)
        except ValueError:
            return response
        if not isinstance(body, dict) or str(body.get("token_type", "")).lower() != "dpop":
            if isinstance(body, dict) and "access_token" in body:
                self.store.update(dpop_bound=False)
            return response
        self.store.update(dpop_bound=True)
        body["token_type"] = "Bearer"
        dropped = ("content-length", "content-encoding")
        headers = {k: v for k, v in response.headers.items() if k.lower() not in dropped}
        return httpx2.Response(
            response.status_code, headers=headers, content=json.dumps(body).encode(), request=response.request
        )


def is_token_request(request: httpx2.Request, metadata: Any) -> bool:
    endpoint = getattr(metadata, "token_endpoint", None)
    return request.method == "POST" and endpoint is not None and str(request.url) == str(endpoint)
