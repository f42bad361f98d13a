"""Where `mcpgw login` keeps an upstream's OAuth tokens: one owner-only JSON file per server.

Owns: the tokens folder (`[gateway] tokens_dir`, else `$XDG_STATE_HOME/mcpgw/tokens`), the file of
one server (`NAME.json`, mode 0600 in a 0700 folder, replaced atomically), and `TokenFile`, the
mcp SDK's `TokenStorage` over it. The file records the URL it was logged in for: tokens stored for
one URL are never offered to another (an entry whose `url` changed needs a new login). It also
keeps what the SDK discovers only in memory (the authorization server's metadata and the tokens'
expiry time), so a restarted gateway refreshes at the right endpoint before the token expires.

Token values never leave this module but in the `Authorization` header the SDK builds; nothing
here logs them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from mcp.shared.auth import OAuthClientInformationFull, OAuthMetadata, OAuthToken
from pydantic import ValidationError

from mcpgw.config import GatewaySettings, expand
from mcpgw.errors import ConfigError


def tokens_dir(settings: GatewaySettings) -> Path:
    """The folder holding the login files (created, owner-only, when first written)."""
    if settings.tokens_dir is not None:
        return Path(expand(settings.tokens_dir, key="gateway.tokens_dir")).expanduser()
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "mcpgw" / "tokens"


class TokenFile:
    """The mcp SDK's `TokenStorage` for one server, bound to the URL it logs in to."""

    def __init__(self, folder: Path, server: str, url: str, *, fresh: bool = False) -> None:
        self.path = folder / f"{server}.json"
        self.server = server
        self.url = url
        self.fresh = fresh
        """A new login: the stored tokens are hidden from the SDK (and kept, should it fail)."""

    # --- the file -------------------------------------------------------------------------

    def read(self) -> dict[str, Any]:
        """The stored record for this URL; empty when there is none, or it was for another URL."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the login file {self.path} ({exc}); "
                f"delete it and run `mcpgw login {self.server}`",
                key=f"servers.{self.server}",
            ) from None
        if not isinstance(data, dict) or data.get("url") != self.url:
            return {}  # logged in to another URL: those tokens are not this server's
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        # Created 0600 (never briefly readable by others), then renamed over the old file.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump({**data, "url": self.url}, file, indent=1)
        os.replace(temporary, self.path)

    def update(self, **fields: Any) -> None:
        self._write({**self.read(), **fields})

    def remove(self) -> bool:
        """Forget this server's login; whether there was one."""
        existed = bool(self.read())
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return existed

    # --- what the SDK does not keep --------------------------------------------------------

    def expires_at(self) -> float | None:
        value = self.read().get("expires_at")
        return float(value) if isinstance(value, int | float) else None

    def oauth_metadata(self) -> OAuthMetadata | None:
        metadata: OAuthMetadata | None = self._model(OAuthMetadata, "oauth_metadata")
        return metadata

    def _model(self, model: Any, field: str) -> Any:
        value = self.read().get(field)
        if value is None:
            return None
        try:
            return model.model_validate(value)
        except ValidationError:
            return None  # an unreadable record is no login: the next login writes a good one

    # --- the SDK's TokenStorage ------------------------------------------------------------

    def tokens(self) -> OAuthToken | None:
        tokens: OAuthToken | None = self._model(OAuthToken, "tokens")
        return tokens

    def client(self) -> OAuthClientInformationFull | None:
        info: OAuthClientInformationFull | None = self._model(OAuthClientInformationFull, "client")
        return info

    async def get_tokens(self) -> OAuthToken | None:
        return None if self.fresh else self.tokens()

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.fresh = False
        expires = time.time() + tokens.expires_in if tokens.expires_in else None
        self.update(tokens=tokens.model_dump(mode="json", exclude_none=True), expires_at=expires)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client()

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.update(client=client_info.model_dump(mode="json", exclude_none=True))
