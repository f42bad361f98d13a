"""An OpenAPI upstream's document: fetched or read, checked, and cut down to what is served.

Owns: loading the spec (an http(s) URL, a `file://` URL or a path; JSON or YAML), the checks that
turn a document mcpgw cannot serve into a `ConfigError` naming `servers.NAME.openapi` and the
reason (unreadable, not OpenAPI 3, Swagger 2.0, no operations, none left by `include`/`exclude`),
the API's base URL (`base_url`, else the spec's first `servers` entry), and the selection
(`include`/`exclude`) and header parameters dropped where the registry sets the header itself.

Why our own selection instead of fastmcp's `RouteMap`s: a route map is applied after the whole
document is parsed, so a spec of hundreds of operations costs its full parse even when a few are
served; cutting the document first keeps the parse (the slow part of start-up) to what is served.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import anyio
import httpx2

from mcpgw.config import HTTP_METHODS
from mcpgw.errors import ConfigError

FETCH_TIMEOUT = 30.0
"""Seconds fetching a spec may take (the upstream's start-up timeout bounds it too)."""
MAX_SPEC_BYTES = 64 * 1024 * 1024
"""A larger document is refused before it is parsed."""


@dataclass(frozen=True)
class Operation:
    """One operation of the document: how `include`/`exclude` and the tool names see it."""

    method: str
    """Upper case: `GET`."""
    path: str
    operation_id: str | None


@dataclass(frozen=True)
class Loaded:
    document: dict[str, Any]
    url: str | None
    """Where it was fetched from (relative `servers` URLs resolve against it); None for a file."""


async def load(source: str, *, key: str, headers: Mapping[str, str], base_url: str | None) -> Loaded:
    """The document at `source` (URL or path), parsed and checked to be OpenAPI 3.

    `headers` go with the request only when the spec is on the API's own origin (`base_url`):
    the API's credentials never reach another host.
    """
    # Reading, parsing and checking a large spec takes a while (YAML most): in a worker thread, so
    # the gateway's other traffic goes on meanwhile.
    if source.startswith(("http://", "https://")):
        text = await _fetch(source, key=key, headers=headers if _same_origin(source, base_url) else {})
        document = await anyio.to_thread.run_sync(partial(_parse, text, source=source, key=key))
        return Loaded(document, source)
    path = Path(unquote(urlsplit(source).path) if source.startswith("file://") else source).expanduser()
    document = await anyio.to_thread.run_sync(partial(_read, path, key=key))
    return Loaded(document, None)


def _read(path: Path, *, key: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_SPEC_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_SPEC_BYTES // 2**20} MiB", key=key)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"spec file {str(path)!r} not found", key=key) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read spec file {str(path)!r}: {exc}", key=key) from None
    return _parse(text, source=str(path), key=key)


def _same_origin(url: str, base_url: str | None) -> bool:
    if base_url is None:
        return False
    one, other = urlsplit(url), urlsplit(base_url)
    return (one.scheme, one.netloc) == (other.scheme, other.netloc)


async def _fetch(url: str, *, key: str, headers: Mapping[str, str]) -> str:
    try:
        async with httpx2.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=True) as http:
            response = await http.get(url, headers=dict(headers))
    except httpx2.HTTPError as exc:
        raise ConfigError(f"cannot fetch the spec from {url}: {type(exc).__name__}: {exc}", key=key) from None
    if response.status_code != 200:
        hint = (
            " (the server's headers go with it only when base_url is on the spec's origin)"
            if response.status_code in (401, 403) and not headers
            else ""
        )
        raise ConfigError(f"fetching the spec from {url} answered HTTP {response.status_code}{hint}", key=key)
    if len(response.content) > MAX_SPEC_BYTES:
        raise ConfigError(f"the spec at {url} is larger than {MAX_SPEC_BYTES // 2**20} MiB", key=key)
    return response.text


def _parse(text: str, *, source: str, key: str) -> dict[str, Any]:
    """The checked document: JSON, else YAML (a superset of JSON, and slower: JSON is tried first)."""
    try:
        document = json.loads(text)
    except ValueError:
        import yaml  # only for YAML specs

        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source} is neither JSON nor YAML: {exc}", key=key) from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source} is not an OpenAPI document (not a JSON/YAML object)", key=key)
    _check(document, key=key)
    return document


def _check(document: dict[str, Any], *, key: str) -> None:
    if "swagger" in document:
        raise ConfigError(
            f"Swagger {document['swagger']} is not supported: convert the spec to OpenAPI 3 "
            "(for example with swagger2openapi)",
            key=key,
        )
    version = document.get("openapi")
    if not isinstance(version, str):
        raise ConfigError("not an OpenAPI document: it has no 'openapi' version", key=key)
    if not version.startswith(("3.0", "3.1")):
        raise ConfigError(f"OpenAPI {version} is not supported (3.0 and 3.1 are)", key=key)
    if not isinstance(document.get("paths") or {}, dict):
        raise ConfigError("'paths' is not an object", key=key)
    if not any(True for _ in operations(document)):
        raise ConfigError("the spec has no operations ('paths' is empty)", key=key)
    if (external := _external_ref(document)) is not None:
        raise ConfigError(
            f"$ref {external!r} points outside the document, which is not supported: bundle the spec "
            "into one file first (for example with `redocly bundle`)",
            key=key,
        )


def _external_ref(node: Any) -> str | None:
    """The first `$ref` that is not local (`#/...`): fastmcp resolves only references within the document."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def operations(document: Mapping[str, Any]) -> Iterator[Operation]:
    """Every operation of the document, in its order."""
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        for method, operation in item.items():
            if method.upper() in HTTP_METHODS and isinstance(operation, dict):
                operation_id = operation.get("operationId")
                yield Operation(method.upper(), path, operation_id if isinstance(operation_id, str) else None)


def matches(operation: Operation, pattern: str) -> bool:
    """`"GET /invoices*"`, `"/invoices*"` (any method) or an operationId glob (`"list*"`)."""
    pattern = pattern.strip()
    method, sep, path = pattern.partition(" ")
    if sep:
        return method.strip() in ("*", operation.method) and fnmatch.fnmatchcase(operation.path, path.strip())
    if pattern.startswith("/"):
        return fnmatch.fnmatchcase(operation.path, pattern)
    return operation.operation_id is not None and fnmatch.fnmatchcase(operation.operation_id, pattern)


def selected(
    document: dict[str, Any], *, include: list[str], exclude: list[str], headers: Mapping[str, str], key: str
) -> dict[str, Any]:
    """A copy of `document` with only the served operations, without header parameters the registry sets.

    `include` empty: every operation; `exclude` is applied after it. None left is a `ConfigError`.
    """
    include = [_upper_method(pattern) for pattern in include]
    exclude = [_upper_method(pattern) for pattern in exclude]
    fixed = {name.lower() for name in headers}
    paths: dict[str, Any] = {}
    for path, item in (document.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        kept: dict[str, Any] = {}
        for field, value in item.items():
            if field.upper() not in HTTP_METHODS:
                kept[field] = value
                continue
            if not isinstance(value, dict):
                continue
            operation_id = value.get("operationId")
            operation = Operation(
                field.upper(), path, operation_id if isinstance(operation_id, str) else None
            )
            if include and not any(matches(operation, pattern) for pattern in include):
                continue
            if any(matches(operation, pattern) for pattern in exclude):
                continue
            kept[field] = value
        if any(field.upper() in HTTP_METHODS for field in kept):
            paths[path] = _without_headers(kept, fixed, document) if fixed else kept
    if not paths:
        raise ConfigError(
            f"include {include or ['*']} and exclude {exclude} leave none of the spec's operations", key=key
        )
    return {**document, "paths": paths}


def _upper_method(pattern: str) -> str:
    method, sep, path = pattern.strip().partition(" ")
    return f"{method.upper()} {path.strip()}" if sep else pattern.strip()


def _without_headers(item: dict[str, Any], names: set[str], document: Mapping[str, Any]) -> dict[str, Any]:
    """The path item without header parameters named in `names` (the registry's `headers` win)."""

    def kept(parameters: Any) -> Any:
        if not isinstance(parameters, list):
            return parameters
        return [
            p
            for p in parameters
            if not (
                isinstance(r := resolved(p, document), dict)
                and r.get("in") == "header"
                and str(r.get("name", "")).lower() in names
            )
        ]

    out = {field: (kept(value) if field == "parameters" else value) for field, value in item.items()}
    for field, value in out.items():
        if field.upper() in HTTP_METHODS and "parameters" in value:
            out[field] = {**value, "parameters": kept(value["parameters"])}
    return out


def resolved(node: Any, document: Mapping[str, Any]) -> Any:
    """`node`, or what its local `$ref` (`#/components/...`) points to (followed a few times)."""
    for _ in range(8):
        if not (isinstance(node, dict) and isinstance(ref := node.get("$ref"), str) and ref.startswith("#/")):
            return node
        target: Any = document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        node = target
    return node


def base_url(document: Mapping[str, Any], *, given: str | None, spec_url: str | None, key: str) -> str:
    """`given`, else the spec's first `servers` URL (its variables at their defaults), resolved
    against the spec's own URL; with neither, the spec's origin (OpenAPI's default server `/`)."""
    if given:
        return given
    servers = document.get("servers")
    url = "/"
    if isinstance(servers, list) and servers and isinstance(servers[0], dict) and servers[0].get("url"):
        url = str(servers[0]["url"])
        for name, variable in (servers[0].get("variables") or {}).items():
            if isinstance(variable, dict):
                url = url.replace(f"{{{name}}}", str(variable.get("default", "")))
    if spec_url is not None:
        url = urljoin(spec_url, url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"the spec gives no absolute server URL ({url!r}): set base_url",
            key=key.rsplit(".", 1)[0] + ".base_url",
        )
    return url
