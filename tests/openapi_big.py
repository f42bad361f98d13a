"""A public-style OpenAPI spec of realistic size, generated: the naming tests' and the bench's spec.

Shaped after the large public specs (GitHub's REST API, Stripe's): resources nested two deep, five
to seven operations each, `operationId`s written `area/verb-noun-for-thing` (slashes and dashes,
which tool names cannot all have), some longer than 64 characters, a few that collide once
sanitised (`issues/get` and `issues.get`), a few operations without an `operationId`, shared
`$ref` schemas and parameters, and long descriptions. Deterministic: the same arguments give the
same document, so names can be compared between runs.

    python tests/openapi_big.py OUT.json [RESOURCES]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

AREAS = ["repos", "issues", "pulls", "actions", "billing", "orgs", "teams", "checks", "packages", "security"]
THINGS = [
    "comments",
    "labels",
    "milestones",
    "webhooks",
    "deployments",
    "environments",
    "secrets",
    "variables",
    "runners",
    "artifacts",
    "caches",
    "invitations",
    "collaborators",
    "reactions",
    "statuses",
]


def _op(operation_id: str | None, summary: str, *, body: bool = False, page: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"{summary}. " + "Returns the resource as the API represents it; see the guide. " * 3,
        "tags": [summary.split()[-1]],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}},
            },
            "404": {"$ref": "#/components/responses/NotFound"},
        },
    }
    if operation_id is not None:
        op["operationId"] = operation_id
    if page:
        op["parameters"] = [
            {"$ref": "#/components/parameters/PerPage"},
            {"$ref": "#/components/parameters/Page"},
        ]
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ThingInput"}}},
        }
    return op


def big_spec(resources: int = 70, *, version: str = "3.1.0") -> dict[str, Any]:
    """About six operations per resource (`resources=70`: about 430 operations)."""
    paths: dict[str, Any] = {}
    for i in range(resources):
        area, thing = AREAS[i % len(AREAS)], THINGS[(i // len(AREAS)) % len(THINGS)]
        owner = f"/{area}/{{owner}}/{{repo}}/{thing}" + (f"-v{i // 150}" if i >= 150 else "")
        # every 7th resource has operationIds longer than 64 characters, as GitHub's longest are
        long = "-for-the-authenticated-user-in-an-organization-with-fine-grained-access" if i % 7 == 0 else ""
        common = [{"$ref": "#/components/parameters/Owner"}, {"$ref": "#/components/parameters/Repo"}]
        paths[owner] = {
            "parameters": common,
            "get": _op(f"{area}/list-{thing}{long}", f"List {thing}", page=True),
            "post": _op(f"{area}/create-{thing}{long}", f"Create {thing}", body=True),
        }
        one = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
        paths[f"{owner}/{{id}}"] = {
            "parameters": [*common, one],
            "get": _op(f"{area}/get-{thing}{long}", f"Get {thing}"),
            "patch": _op(f"{area}/update-{thing}{long}", f"Update {thing}", body=True),
            "put": _op(f"{area}/replace-{thing}{long}", f"Replace {thing}", body=True),
            "delete": _op(f"{area}/delete-{thing}{long}" if i % 11 else None, f"Delete {thing}"),
        }
    # collisions once sanitised: `x/get` and `x.get` are both `x_get`; `x_get` is exactly one
    for suffix, operation_id in (("a", "meta/get"), ("b", "meta.get"), ("c", "meta_get"), ("d", "meta get")):
        paths[f"/meta/{suffix}"] = {"get": _op(operation_id, "Get meta")}
    return {
        "openapi": version,
        "info": {
            "title": "Public-style API",
            "version": "2026-11-30",
            "description": "A large generated API.",
        },
        "servers": [{"url": "https://api.example.com"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "owner": {"$ref": "#/components/schemas/Owner"},
                        "created_at": {"type": "string", "format": "date-time"},
                    },
                },
                "ThingInput": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "private": {"type": "boolean"}},
                },
                "Owner": {
                    "type": "object",
                    "properties": {"login": {"type": "string"}, "id": {"type": "integer"}},
                },
            },
            "parameters": {
                "Owner": {"name": "owner", "in": "path", "required": True, "schema": {"type": "string"}},
                "Repo": {"name": "repo", "in": "path", "required": True, "schema": {"type": "string"}},
                "PerPage": {"name": "per_page", "in": "query", "schema": {"type": "integer", "maximum": 100}},
                "Page": {"name": "page", "in": "query", "schema": {"type": "integer"}},
            },
            "responses": {"NotFound": {"description": "Not found"}},
        },
    }


def operation_count(document: dict[str, Any]) -> int:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return sum(1 for item in document["paths"].values() for key in item if key in methods)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.write_text(json.dumps(big_spec(int(sys.argv[2]) if len(sys.argv) > 2 else 70)))
