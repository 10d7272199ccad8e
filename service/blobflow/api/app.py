"""The aiohttp application: middlewares outermost first, then every route of §9.

Middlewares: count the request by route and status, turn every failure
into the JSON error shape, then identify, rate limit and authenticate the
caller. Handlers find what they need under `CONTEXT`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from blobflow.api import blobs, definitions, executions, logs
from blobflow.api.access import Access, rate_headers
from blobflow.api.context import CONTEXT, ApiContext
from blobflow.api.health import Probe, health_routes
from blobflow.api.responses import errors_as_json, json_response
from blobflow.core.yamlsafe import load_yaml

# Registration bundles are the largest bodies: many definitions of up to 1 MiB each.
MAX_BODY_BYTES = 8 * 1024 * 1024


def api_app(ctx: ApiContext, access: Access, probes: Mapping[str, Probe]) -> web.Application:
    app = web.Application(
        middlewares=[_count, errors_as_json, access.middleware], client_max_size=MAX_BODY_BYTES
    )
    app[CONTEXT] = ctx
    health_routes(app, probes)
    app.add_routes(routes())
    app.on_response_prepare.append(rate_headers)
    return app


def routes() -> list[web.RouteDef]:
    """Every route but health and readiness (`blobflow.api.health` adds those)."""
    return [
        web.get("/metrics", _metrics),
        web.get("/openapi.json", _openapi),
        *executions.routes(),
        *logs.routes(),
        *definitions.routes(),
        *blobs.routes(),
    ]


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, kept as YAML beside this module."""
    text = resources.files("blobflow.api").joinpath("openapi.yaml").read_bytes()
    document = load_yaml(text).data
    if not isinstance(document, dict):
        raise TypeError("openapi.yaml must hold a mapping")
    return document


async def _openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[CONTEXT].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[CONTEXT].metrics.api_request(route, response.status)
    return response
