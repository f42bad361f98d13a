"""A small REST API (invoices) and its OpenAPI spec, on 127.0.0.1: the OpenAPI upstream tests' service.

Every call but the spec's needs `Authorization: Bearer s3cret` (else 401). It answers JSON and
text, takes path, query, header and cookie parameters and a JSON body, and fails on purpose:
`GET /invoices/{id}` of an unknown id is 404 with a JSON body, `GET /boom` is 500 with a text one,
`GET /busy` is 429 with `Retry-After`, `GET /slow` answers after 30 s.

The spec is served in both versions, each with `$ref`s (schemas, parameters, request bodies,
responses): `/openapi-3.0.json`, `/openapi-3.1.yaml` (YAML), and `/openapi-3.0-relative.json`
whose `servers` URL is relative (`/`), resolved against where the spec was fetched from, and
`/private/openapi.json`, which needs the token like the API.
`GET /seen` lists the requests received (method, path, query, the headers a test asks about);
`DELETE /seen` forgets them.

    python tests/servers/rest_api.py PORT
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import anyio
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TOKEN = "Bearer s3cret"
SEEN: list[dict[str, Any]] = []
INVOICES: dict[str, dict[str, Any]] = {
    "inv-1": {
        "id": "inv-1",
        "customer": "Ada",
        "email": "ada@example.com",
        "amount": 120.5,
        "status": "open",
    },
    "inv-2": {"id": "inv-2", "customer": "Bob", "email": "bob@example.com", "amount": 80.0, "status": "paid"},
}


def spec(version: str, *, server_url: str | None = None) -> dict[str, Any]:
    """The API's spec: OpenAPI `version` (3.0.x or 3.1.x), with `$ref`s throughout."""
    nullable: dict[str, Any] = (
        {"type": "string", "nullable": True} if version.startswith("3.0") else {"type": ["string", "null"]}
    )
    invoice_id = {"$ref": "#/components/parameters/InvoiceId"}
    document: dict[str, Any] = {
        "openapi": version,
        "info": {"title": "Billing", "version": "1.0", "description": "Invoices of the billing service."},
        "paths": {
            "/invoices": {
                "get": {
                    "operationId": "listInvoices",
                    "summary": "List invoices",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["open", "paid"]},
                        },
                        {"$ref": "#/components/parameters/Limit"},
                        {"name": "Authorization", "in": "header", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "The invoices",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Invoice"},
                                    }
                                }
                            },
                        }
                    },
                },
                "post": {
                    "operationId": "createInvoice",
                    "summary": "Create an invoice",
                    "requestBody": {"$ref": "#/components/requestBodies/NewInvoice"},
                    "responses": {"201": {"$ref": "#/components/responses/OneInvoice"}},
                },
            },
            "/invoices/{id}": {
                "parameters": [invoice_id],
                "get": {
                    "operationId": "getInvoice",
                    "summary": "One invoice",
                    "parameters": [
                        {"name": "X-Request-Tag", "in": "header", "schema": {"type": "string"}},
                        {"name": "session", "in": "cookie", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"$ref": "#/components/responses/OneInvoice"},
                        "404": {"description": "No"},
                    },
                },
                "put": {
                    "operationId": "replaceInvoice",
                    "requestBody": {"$ref": "#/components/requestBodies/NewInvoice"},
                    "responses": {"200": {"$ref": "#/components/responses/OneInvoice"}},
                },
                "delete": {"operationId": "deleteInvoice", "responses": {"204": {"description": "Deleted"}}},
            },
            "/invoices/{id}/note": {
                "parameters": [invoice_id],
                "get": {
                    "operationId": "invoiceNote",
                    "responses": {
                        "200": {
                            "description": "A note",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                },
            },
            "/boom": {"get": {"operationId": "boom", "responses": {"200": {"description": "Never"}}}},
            "/busy": {"get": {"operationId": "busy", "responses": {"200": {"description": "Never"}}}},
            "/slow": {"get": {"operationId": "slow", "responses": {"200": {"description": "Late"}}}},
        },
        "components": {
            "schemas": {
                "Invoice": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "customer": {"type": "string"},
                        "email": {"type": "string"},
                        "amount": {"$ref": "#/components/schemas/Money"},
                        "status": {"type": "string"},
                        "memo": nullable,
                    },
                },
                "Money": {"type": "number", "minimum": 0},
                "NewInvoice": {
                    "type": "object",
                    "required": ["customer", "amount"],
                    "properties": {
                        "customer": {"type": "string"},
                        "email": {"type": "string"},
                        "amount": {"$ref": "#/components/schemas/Money"},
                        "memo": nullable,
                    },
                },
            },
            "parameters": {
                "InvoiceId": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                "Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            },
            "requestBodies": {
                "NewInvoice": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewInvoice"}}},
                }
            },
            "responses": {
                "OneInvoice": {
                    "description": "An invoice",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Invoice"}}},
                }
            },
        },
    }
    if server_url is not None:
        document["servers"] = [{"url": server_url}]
    return document


def _record(request: Request) -> None:
    SEEN.append(
        {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "authorization": request.headers.get("authorization"),
            "x-request-tag": request.headers.get("x-request-tag"),
            "cookie": request.headers.get("cookie"),
        }
    )


def _authorised(request: Request) -> Response | None:
    _record(request)
    if request.headers.get("authorization") != TOKEN:
        return JSONResponse({"error": "missing or wrong token"}, status_code=401)
    return None


async def invoices(request: Request) -> Response:
    if (refused := _authorised(request)) is not None:
        return refused
    if request.method == "POST":
        body = await request.json()
        invoice = {"id": f"inv-{len(INVOICES) + 1}", "status": "open", **body}
        INVOICES[invoice["id"]] = invoice
        return JSONResponse(invoice, status_code=201)
    found = [i for i in INVOICES.values() if request.query_params.get("status") in (None, i["status"])]
    return JSONResponse(found[: int(request.query_params.get("limit", "100"))])


async def invoice(request: Request) -> Response:
    if (refused := _authorised(request)) is not None:
        return refused
    ident = request.path_params["id"]
    if request.method == "PUT":
        INVOICES[ident] = {"id": ident, "status": "open", **(await request.json())}
    if ident not in INVOICES:
        return JSONResponse({"error": f"no invoice {ident}"}, status_code=404)
    if request.method == "DELETE":
        del INVOICES[ident]
        return Response(status_code=204)
    answer = dict(INVOICES[ident])
    if tag := request.headers.get("x-request-tag"):
        answer["tag"] = tag
    if session := request.cookies.get("session"):
        answer["session"] = session
    return JSONResponse(answer)


async def note(request: Request) -> Response:
    if (refused := _authorised(request)) is not None:
        return refused
    return PlainTextResponse(f"Invoice {request.path_params['id']}: pay within 30 days.")


async def boom(request: Request) -> Response:
    if (refused := _authorised(request)) is not None:
        return refused
    return PlainTextResponse("database down", status_code=500)


async def busy(request: Request) -> Response:
    if (refused := _authorised(request)) is not None:
        return refused
    return JSONResponse({"error": "slow down"}, status_code=429, headers={"Retry-After": "7"})


async def slow(request: Request) -> Response:
    """Answers after 30 s: longer than any test waits (a hang guard ends it sooner)."""
    _record(request)
    await anyio.sleep(30)
    return JSONResponse({"late": True})


async def seen(request: Request) -> Response:
    if request.method == "DELETE":
        SEEN.clear()
    return JSONResponse(SEEN)


def spec_route(version: str, *, relative: bool = False, as_yaml: bool = False, private: bool = False) -> Any:
    async def serve(request: Request) -> Response:
        if private and (refused := _authorised(request)) is not None:
            return refused
        base = str(request.base_url).rstrip("/")
        document = spec(version, server_url="/" if relative else base)
        if as_yaml:
            return PlainTextResponse(yaml.safe_dump(copy.deepcopy(document)), media_type="application/yaml")
        return Response(json.dumps(document), media_type="application/json")

    return serve


app = Starlette(
    routes=[
        Route("/invoices", invoices, methods=["GET", "POST"]),
        Route("/invoices/{id}", invoice, methods=["GET", "PUT", "DELETE"]),
        Route("/invoices/{id}/note", note),
        Route("/boom", boom),
        Route("/busy", busy),
        Route("/slow", slow),
        Route("/seen", seen, methods=["GET", "DELETE"]),
        Route("/openapi-3.0.json", spec_route("3.0.3")),
        Route("/openapi-3.1.yaml", spec_route("3.1.0", as_yaml=True)),
        Route("/openapi-3.0-relative.json", spec_route("3.0.3", relative=True)),
        Route("/private/openapi.json", spec_route("3.0.3", private=True)),
    ]
)

if __name__ == "__main__":
    # a `/slow` request cut off by its caller must not hold up the shutdown
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", timeout_graceful_shutdown=0.5
    )
