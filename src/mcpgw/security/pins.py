"""Pinned definitions: the lock file and its comparison with what upstreams serve.

Owns: the lock file next to the registry (`servers.lock` for `servers.toml`,
or `[security] lock`), a TOML file meant to be read and diffed by people: per
server, per tool (and prompt and resource template) the sha256 digest of the
canonical JSON of its whole definition as the upstream serves it (every field:
title, schemas, annotations, `_meta`, icons, execution...), its description, and the
definition itself as indented JSON, so `mcpgw pin --diff` can show old and new
text; and the comparison of pins with current definitions (`changes`,
`approve`). What a gateway does with an item that does not match its pin is
`trust.Trust`'s; what `mcpgw pin` writes is decided in `review`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mcpgw.config import Registry
from mcpgw.config.files import write_atomically
from mcpgw.errors import ConfigError, RegistryError
from mcpgw.security import poisoning

PINNED_LISTS: dict[str, str] = {"tools": "name", "prompts": "name", "resource_templates": "uriTemplate"}
"""List name -> the key naming an item. A pin covers every field of the item as the upstream serves it:
a pin over some fields let a tool change its `title`, `_meta`, `icons` or `execution` unseen."""

KIND_OF = {"tools": "tool", "prompts": "prompt", "resource_templates": "resource template"}

LOCK_HEADER = """\
# mcpgw lock file: pinned definitions of the upstreams' tools, prompts and resource templates.
# Written by `mcpgw pin`; review changes with `mcpgw pin --diff`, accept them with `mcpgw pin --approve`.
# Each entry: sha256 of the canonical JSON of the definition, its description, and the definition.
"""


@dataclass(frozen=True)
class Pin:
    sha256: str
    description: str
    definition: str
    """Indented JSON with sorted keys: the text `--diff` compares."""


ServerPins = dict[str, dict[str, Pin]]
"""List name -> item name -> pin."""
Lock = dict[str, ServerPins]
"""Server name -> its pins."""


def definition(list_name: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """What a pin covers: the whole item, every field (see `PINNED_LISTS`)."""
    return dict(item)


def digest(defn: Mapping[str, Any]) -> str:
    canonical = json.dumps(defn, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def pin_of(list_name: str, item: Mapping[str, Any]) -> Pin:
    defn = definition(list_name, item)
    # Invisible characters are written as JSON escapes: a reviewer of the file or a diff sees them.
    text = poisoning.json_escaped(json.dumps(defn, sort_keys=True, indent=2, ensure_ascii=False))
    return Pin(digest(defn), poisoning.shown(str(defn.get("description") or "")), text)


def snapshot(lists: Mapping[str, list[dict[str, Any]]]) -> ServerPins:
    """The pins of one upstream's current lists."""
    pins: ServerPins = {}
    for list_name, key in PINNED_LISTS.items():
        pins[list_name] = {
            str(item.get(key, "")): pin_of(list_name, item) for item in lists.get(list_name, [])
        }
    return pins


def lock_path(registry: Registry, registry_path: Path | None) -> Path:
    """`[security] lock` (relative to the registry's directory), else the registry's name with `.lock`."""
    base = registry_path if registry_path is not None else Path("servers.toml")
    if registry.security.lock:
        configured = Path(registry.security.lock).expanduser()
        return configured if configured.is_absolute() else base.parent / configured
    return base.with_suffix(".lock")


# --- the file ---------------------------------------------------------------------------------------


def read_lock(path: Path) -> Lock | None:
    """The lock file's pins, None when there is none; a damaged or edited entry is a `ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from exc
    import tomlkit  # only with a lock file: `mcpgw serve` without one never loads it (RSS)

    try:
        data = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=str(path)) from exc
    lock: Lock = {}
    servers = data.get("servers", {})
    if not isinstance(servers, dict) or set(data) - {"servers"}:
        raise ConfigError(
            "expected only [servers.NAME.tools|prompts|resource_templates] tables", file=str(path)
        )
    for server, lists in servers.items():
        if not isinstance(lists, dict) or set(lists) - set(PINNED_LISTS):
            raise ConfigError("unknown table", file=str(path), key=f"servers.{server}")
        lock[server] = {}
        for list_name in PINNED_LISTS:
            entries = lists.get(list_name, {})
            lock[server][list_name] = {}
            for name, entry in entries.items():
                key = f"servers.{server}.{list_name}.{name}"
                try:
                    pin = Pin(
                        str(entry["sha256"]), str(entry.get("description", "")), str(entry["definition"])
                    )
                    parsed = json.loads(pin.definition)
                    recomputed = digest(parsed)
                    described = poisoning.shown(str(parsed.get("description") or ""))
                except (KeyError, TypeError, ValueError, AttributeError):
                    raise ConfigError("needs sha256 and a JSON definition", file=str(path), key=key) from None
                if recomputed != pin.sha256:
                    raise ConfigError(
                        "sha256 does not match the definition (edited by hand?); "
                        "re-pin with `mcpgw pin --approve`",
                        file=str(path),
                        key=key,
                    )
                if described != pin.description:
                    raise ConfigError("description does not match the definition", file=str(path), key=key)
                lock[server][list_name][name] = pin
    return lock


def write_lock(path: Path, lock: Lock) -> None:
    """Write the whole lock, sorted so that diffs between versions are minimal; atomically."""
    import tomlkit  # see `read_lock`

    doc = tomlkit.document()
    for line in LOCK_HEADER.splitlines():
        doc.add(tomlkit.comment(line.removeprefix("# ")))
    servers = tomlkit.table(is_super_table=True)
    for server in sorted(lock):
        lists = tomlkit.table(is_super_table=True)
        for list_name in PINNED_LISTS:
            entries = lock[server].get(list_name, {})
            if not entries:
                continue
            table = tomlkit.table(is_super_table=True)
            for name in sorted(entries):
                pin = entries[name]
                entry = tomlkit.table()
                entry.add("sha256", pin.sha256)
                entry.add("description", tomlkit.string(pin.description, multiline="\n" in pin.description))
                entry.add("definition", tomlkit.string(pin.definition, multiline=True))
                table.add(name, entry)
            lists.add(list_name, table)
        servers.add(server, lists)
    doc.add("servers", servers)
    write_atomically(path, tomlkit.dumps(doc))


# --- comparing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    server: str
    list_name: str
    name: str
    status: Literal["new", "changed", "removed"]
    old: Pin | None
    new: Pin | None

    def __str__(self) -> str:
        return f"{self.server}: {KIND_OF[self.list_name]} {self.name!r} {self.status}"

    def diff(self) -> str:
        """A unified diff of the old and new definition text."""
        import difflib  # only `mcpgw pin` and the console show a diff: a gateway never loads it

        old = self.old.definition.splitlines(keepends=True) if self.old else []
        new = self.new.definition.splitlines(keepends=True) if self.new else []
        label = f"{self.server}/{self.list_name}/{self.name}"
        lines = difflib.unified_diff(old, new, f"pinned {label}", f"served {label}", lineterm="\n")
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def changes(server: str, pinned: ServerPins | None, current: ServerPins) -> list[Change]:
    found: list[Change] = []
    for list_name in PINNED_LISTS:
        before = (pinned or {}).get(list_name, {})
        after = current.get(list_name, {})
        for name in sorted(set(before) | set(after)):
            old, new = before.get(name), after.get(name)
            if old is None:
                found.append(Change(server, list_name, name, "new", None, new))
            elif new is None:
                found.append(Change(server, list_name, name, "removed", old, None))
            elif old.sha256 != new.sha256:
                found.append(Change(server, list_name, name, "changed", old, new))
    return found


def approve(
    server: str, pinned: ServerPins | None, current: ServerPins, selected: Mapping[str, Collection[str]]
) -> tuple[ServerPins, list[Change], list[Change]]:
    """`pinned` with only the selected items (list name -> item names) brought up to date.

    Returns the new pins, the changes accepted and the changes still pending. A selected item
    that is pinned and unchanged is accepted as is; one neither served nor pinned is a
    `RegistryError` that names what could be approved.
    """
    differences = changes(server, pinned, current)
    pending = {(d.list_name, d.name): d for d in differences}
    known = {(list_name, name) for list_name, entries in current.items() for name in entries}
    known |= {(list_name, name) for list_name, entries in (pinned or {}).items() for name in entries}
    wanted = {(list_name, name) for list_name, names in selected.items() for name in names}
    missing = sorted(wanted - known)
    if missing:
        choices = ", ".join(str(d).removeprefix(f"{server}: ") for d in differences) or "none"
        raise RegistryError(
            f"{server} serves no {KIND_OF[missing[0][0]]} {missing[0][1]!r} and has no pin for one "
            f"(names as the server gives them; pending changes: {choices})"
        )
    pins: ServerPins = {list_name: dict((pinned or {}).get(list_name, {})) for list_name in PINNED_LISTS}
    accepted = []
    for key in sorted(wanted & set(pending)):
        change = pending.pop(key)
        if change.new is None:
            del pins[change.list_name][change.name]
        else:
            pins[change.list_name][change.name] = change.new
        accepted.append(change)
    return pins, accepted, list(pending.values())
