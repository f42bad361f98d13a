"""Tool names for an OpenAPI upstream's operations: valid, short enough, unique and stable.

Owns: the name each operation is served under. It is the `operationId` (else `method_path`),
with every run of characters outside `A-Z a-z 0-9 _ -` made one `_`, so that the exposed name
`<namespace>__<name>` matches the catalog's `^[A-Za-z0-9_-]{1,64}$`. A name longer than what the
namespace leaves (`budget`) is cut and ends in `_` and six hex digits of a hash of the operation's
`METHOD path`; operations whose names would collide get that tag as well, except one whose
`operationId` is already exactly its name. The tag depends only on the operation itself, so an
operation keeps its name however the spec is reordered or grown, and pins stay valid.

Why not fastmcp's naming (`OpenAPIProvider._generate_default_name`): it cuts at 56 characters
whatever the namespace and numbers collisions `_2`, `_3` in document order, so an operation's
name changes when another one is added before it.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

from mcpgw.errors import ConfigError
from mcpgw.upstream.openapi.spec import Operation

MAX_EXPOSED = 64
"""The catalog's limit on an exposed tool name (`config.TOOL_NAME_RE`)."""
_TAG = 6
"""Hex digits of the hash tag; more only when two tags collide (once in millions of specs)."""
MIN_BUDGET = 2 * _TAG
"""Fewer characters left by the namespace than this, and names would be little more than tags."""
_INVALID = re.compile(r"[^A-Za-z0-9_-]+")
_UNDERSCORES = re.compile(r"_{2,}")


def budget(namespace: str) -> int:
    """The characters a tool's own name may have under `namespace` (`<namespace>__<name>` <= 64)."""
    return MAX_EXPOSED - (len(namespace) + 2 if namespace else 0)


def sanitised(text: str) -> str:
    """`text` in the tool-name alphabet, runs of anything else (and of `_`) made one `_`."""
    return _UNDERSCORES.sub("_", _INVALID.sub("_", text)).strip("_-")


def _tag(operation: Operation, length: int) -> str:
    return hashlib.sha256(f"{operation.method} {operation.path}".encode()).hexdigest()[:length]


def _tagged(base: str, tag: str, budget: int) -> str:
    keep = budget - len(tag) - 1
    return f"{base[:keep].rstrip('_-')}_{tag}" if keep > 0 and base else tag


def tool_names(operations: Iterable[Operation], *, budget: int, key: str) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> tool name for every operation, all distinct and at most `budget` long."""
    if budget < MIN_BUDGET:
        raise ConfigError(
            f"the namespace leaves {budget} characters for tool names (at least {MIN_BUDGET} are needed): "
            "give the server a shorter namespace",
            key=key,
        )
    ops = list(operations)
    base = {op: sanitised(op.operation_id or "") or sanitised(f"{op.method.lower()}_{op.path}") for op in ops}
    plain = {
        op: name if len(name) <= budget else _tagged(name, _tag(op, _TAG), budget)
        for op, name in base.items()
    }
    claims: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        claims[plain[op]].append(op)
    names: dict[Operation, str] = {}
    for name, claimants in claims.items():
        exact = [op for op in claimants if op.operation_id == name]
        if len(claimants) == 1:
            names[claimants[0]] = name
            continue
        for op in claimants:
            names[op] = name if exact == [op] else _tagged(base[op], _tag(op, _TAG), budget)
    # A tag can only collide with another tagged name or a plain name ending in the same six hex
    # digits; such names (if any) get longer tags until every name is distinct.
    length = _TAG
    while len(set(names.values())) < len(names) and length < 64:
        length += 2
        seen: dict[str, list[Operation]] = defaultdict(list)
        for op, name in names.items():
            seen[name].append(op)
        for clashing in (group for group in seen.values() if len(group) > 1):
            for op in clashing:
                names[op] = _tagged(base[op], _tag(op, length), budget)
    return {(op.method, op.path): name for op, name in names.items()}
