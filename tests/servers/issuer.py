"""A small OAuth 2.1 authorization server on 127.0.0.1 for the auth tests.

Signs tokens with joserfc (the Authlib project's JOSE library), serves its JWKS,
rotates its key on request, and answers the client-credentials grant at
`/token`. Tests mint the tokens they need, good and bad, through `/mint`.

    python issuer.py PORT [--client-id ID --client-secret SECRET --token-ttl SECONDS]

Endpoints:
  GET  /.well-known/oauth-authorization-server   RFC 8414 metadata
  GET  /jwks                                     current and previous public keys
  GET  /broken-jwks                              always 503 (a JWKS outage), counted
  POST /jwks-outage {on}                         while on, /jwks answers 503 too
  POST /rotate                                   a new signing key (the old one stays published)
  POST /mint {claims, header?, forge?}           a signed token; `forge` makes a broken one:
       "none" (alg none, no signature), "hs" (HS256 keyed with the public key), "foreign"
       (signed by a key not in the JWKS, under the current key id), "unknown-kid"
  POST /token                                    client_credentials grant (basic or post auth)
  GET  /stats                                    counters: jwks fetches, tokens issued
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    def __init__(self, url: str, *, client_id: str, client_secret: str, token_ttl: int) -> None:
        self.url = url
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.keys = [self._new_key()]
        self.outage = False
        self.stats = {"jwks_fetches": 0, "broken_jwks_fetches": 0, "tokens_issued": 0, "token_refusals": 0}

    @staticmethod
    def _new_key() -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": uuid.uuid4().hex[:12], "use": "sig"})

    @property
    def current(self) -> RSAKey:
        return self.keys[-1]

    def sign(self, claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
        return jwt.encode({"alg": "RS256", "kid": self.current.kid, **(header or {})}, claims, self.current)

    def forge(self, kind: str, claims: dict[str, Any]) -> str:
        if kind == "none":
            head = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": self.current.kid}).encode())
            return f"{head}.{_b64(json.dumps(claims).encode())}."
        if kind == "hs":
            # The classic confusion: HMAC keyed with the public key a verifier may hold.
            # (joserfc itself refuses to make an oct key of a public key, so it is signed by hand.)
            head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": self.current.kid}).encode())
            signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
            secret = self.current.as_pem(private=False)
            mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
            return f"{signing_input}.{_b64(mac)}"
        if kind == "foreign":
            return jwt.encode({"alg": "RS256", "kid": self.current.kid}, claims, self._new_key())
        if kind == "unknown-kid":
            other = self._new_key()
            return jwt.encode({"alg": "RS256", "kid": other.kid}, claims, other)
        raise ValueError(kind)

    def app(self) -> Starlette:
        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse(
                {
                    "issuer": self.url,
                    "token_endpoint": f"{self.url}/token",
                    "jwks_uri": f"{self.url}/jwks",
                    "grant_types_supported": ["client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                }
            )

        async def jwks(request: Request) -> JSONResponse:
            self.stats["jwks_fetches"] += 1
            if self.outage:
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
            return JSONResponse({"keys": [key.as_dict(private=False) for key in self.keys[-2:]]})

        async def broken_jwks(request: Request) -> JSONResponse:
            self.stats["broken_jwks_fetches"] += 1
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)

        async def outage(request: Request) -> JSONResponse:
            self.outage = bool((await request.json())["on"])
            return JSONResponse({"on": self.outage})

        async def rotate(request: Request) -> JSONResponse:
            self.keys.append(self._new_key())
            return JSONResponse({"kid": self.current.kid})

        async def mint(request: Request) -> JSONResponse:
            body = await request.json()
            claims = body["claims"]
            if body.get("forge"):
                return JSONResponse({"token": self.forge(body["forge"], claims)})
            return JSONResponse({"token": self.sign(claims, body.get("header"))})

        async def token(request: Request) -> JSONResponse:
            form = await request.form()
            client_id, secret = form.get("client_id"), form.get("client_secret")
            basic = request.headers.get("authorization", "")
            if basic.lower().startswith("basic "):
                client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if client_id != self.client_id or secret != self.client_secret:
                self.stats["token_refusals"] += 1
                return JSONResponse(
                    {"error": "invalid_client", "error_description": "unknown client or wrong secret"},
                    status_code=401,
                )
            now = int(time.time())
            claims = {
                "iss": self.url,
                "sub": client_id,
                "client_id": client_id,
                "aud": str(form.get("resource") or form.get("audience") or self.url),
                "scope": str(form.get("scope") or ""),
                "iat": now,
                "exp": now + self.token_ttl,
                "jti": uuid.uuid4().hex,
            }
            self.stats["tokens_issued"] += 1
            return JSONResponse(
                {"access_token": self.sign(claims), "token_type": "Bearer", "expires_in": self.token_ttl},
                headers={"Cache-Control": "no-store"},
            )

        async def stats(request: Request) -> JSONResponse:
            return JSONResponse(self.stats)

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server", metadata),
                Route("/jwks", jwks),
                Route("/broken-jwks", broken_jwks),
                Route("/jwks-outage", outage, methods=["POST"]),
                Route("/rotate", rotate, methods=["POST"]),
                Route("/mint", mint, methods=["POST"]),
                Route("/token", token, methods=["POST"]),
                Route("/stats", stats),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--client-id", default="mcpgw")
    parser.add_argument("--client-secret", default="s3cret")
    parser.add_argument("--token-ttl", type=int, default=3600)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    issuer = Issuer(url, client_id=args.client_id, client_secret=args.client_secret, token_ttl=args.token_ttl)
    uvicorn.run(issuer.app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
