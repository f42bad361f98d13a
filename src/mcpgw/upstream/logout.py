"""`mcpgw logout`: revoke an upstream's stored tokens where the authorization server allows, and forget them.

Owns: `logout`, which revokes the refresh and access tokens of `mcpgw login` (RFC 7009, through
Authlib's client, the mcp SDK having no revocation) and removes them from the token file (the
client registration is kept for the next login).
"""

from __future__ import annotations

import logging

import httpx2

from mcpgw.config import GatewaySettings
from mcpgw.upstream.tokens import TokenFile, tokens_dir

logger = logging.getLogger("mcpgw.login")


async def logout(server: str, url: str, settings: GatewaySettings) -> str | None:
    """Revoke `server`'s tokens where the authorization server allows (RFC 7009) and forget them;
    what happened, for the user (None: there was no login)."""
    store = TokenFile(tokens_dir(settings), server, url)
    tokens, client, metadata = store.tokens(), store.client(), store.oauth_metadata()
    if tokens is None:
        return None
    endpoint = metadata.revocation_endpoint if metadata else None
    revoked = 0
    if client and endpoint:
        from authlib.common.errors import AuthlibBaseError
        from authlib.integrations.httpx_client import AsyncOAuth2Client

        method = client.token_endpoint_auth_method or "none"
        async with AsyncOAuth2Client(
            client_id=client.client_id,
            client_secret=client.client_secret,
            revocation_endpoint_auth_method=method,
            timeout=30.0,
        ) as oauth:
            hints = [("refresh_token", tokens.refresh_token), ("access_token", tokens.access_token)]
            for hint, token in hints:
                if token is None:
                    continue
                try:
                    answer = await oauth.revoke_token(str(endpoint), token=token, token_type_hint=hint)
                    revoked += answer.status_code == 200
                except (AuthlibBaseError, httpx2.HTTPError) as exc:
                    # Forgotten here all the same: the user asked to be logged out.
                    logger.warning(
                        "upstream %s: revoking its %s failed: %s", server, hint, type(exc).__name__
                    )
    store.update(tokens=None, expires_at=None)
    if revoked:
        return "tokens revoked and removed"
    if endpoint is None:
        return "tokens removed; the authorization server offers no revocation"
    return "tokens removed; the authorization server did not confirm revoking them"
