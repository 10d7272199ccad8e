"""A blob's version history: its deltas in version order, from every provider."""

from __future__ import annotations

from aiohttp import web

from blobflow.api.access import principal
from blobflow.api.context import context
from blobflow.api.params import int_param
from blobflow.api.responses import json_response
from blobflow.api.views import delta_view
from blobflow.errors import not_found


def routes() -> list[web.RouteDef]:
    return [web.get("/v1/blobs/{blob_id}/deltas", blob_deltas)]


async def blob_deltas(request: web.Request) -> web.Response:
    blob_id = request.match_info["blob_id"]
    limit = int_param(request, "limit", default=100, minimum=1, maximum=1000)
    offset = int_param(request, "offset", default=0, minimum=0)
    caller = principal(request)
    # A user sees the deltas of its own executions; admin sees every delta.
    user_id = None if caller.admin else caller.user_id or ""
    page = await context(request).queries.blob_deltas(
        blob_id, user_id=user_id, limit=limit, offset=offset
    )
    if page.total == 0:
        raise not_found(f"blob {blob_id!r}")
    body = {
        "blob_id": blob_id,
        "deltas": [delta_view(document) for document in page.items],
        "total": page.total,
        "limit": limit,
        "offset": offset,
    }
    return json_response(body)
