"""Definition routes: what is registered, every version of one item, and registering.

Listings come from this replica's catalog (what it runs now); one item's
versions come from MongoDB, each exactly as registered.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from blobflow.api.access import require_admin
from blobflow.api.context import context
from blobflow.api.responses import error_body, json_response
from blobflow.core.catalog import Catalog
from blobflow.core.definitions import Kind
from blobflow.errors import ApiError, not_found
from blobflow.runtime.registration import registration_reply

logger = logging.getLogger(__name__)

# Route segment -> definition kind.
KINDS: dict[str, Kind] = {"workflows": "workflow", "providers": "provider", "schemas": "schema"}
BUNDLE_TYPES = frozenset(
    {"application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"}
)


def routes() -> list[web.RouteDef]:
    defs = []
    for segment, kind in KINDS.items():
        defs.append(web.get(f"/v1/{segment}", _lister(kind), name=f"list_{segment}"))
        defs.append(web.get(f"/v1/{segment}/{{id}}", _getter(kind), name=f"get_{kind}"))
    defs.append(web.post("/v1/registry", register))
    return defs


def summaries(catalog: Catalog, kind: Kind) -> list[dict[str, Any]]:
    if kind == "workflow":
        return [
            {
                **_version(catalog, kind, wid),
                "name": wf.spec.name,
                "provider_id": wf.spec.provider_id,
                "active": wf.spec.active,
                "steps": [step.spec.id for step in wf.steps],
            }
            for wid, wf in sorted(catalog.workflows.items())
        ]
    if kind == "provider":
        return [
            {
                **_version(catalog, kind, pid),
                "name": provider.provider.name,
                "workflows": [b.workflow_id for b in catalog.bindings if b.provider_id == pid],
            }
            for pid, provider in sorted(catalog.providers.items())
        ]
    return [
        {**_version(catalog, kind, sid), "name": schema.name, "type": schema.type}
        for sid, schema in sorted(catalog.schemas.items())
    ]


def _version(catalog: Catalog, kind: Kind, item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "version": catalog.version(kind, item_id),
        "content_hash": catalog.hashes.get((kind, item_id)),
    }


def _lister(kind: Kind) -> Any:
    async def list_items(request: web.Request) -> web.Response:
        items = summaries(context(request).catalog(), kind)
        return json_response({"items": items, "total": len(items)})

    return list_items


def _getter(kind: Kind) -> Any:
    async def get_item(request: web.Request) -> web.Response:
        item_id = request.match_info["id"]
        definitions = context(request).definitions
        versions = await definitions.versions(kind, item_id)
        if not versions:
            raise not_found(f"{kind} {item_id!r}")
        latest = versions[0]
        # Only the version shown is read whole: an item may have many, each up to a MiB.
        document = await definitions.document(kind, item_id, latest["version"])
        body = {
            "kind": kind,
            "id": item_id,
            "version": latest["version"],
            "content_hash": latest["hash"],
            "definition": document,
            "versions": [
                {
                    "version": row["version"],
                    "content_hash": row["hash"],
                    "registered_at": row.get("registered_at"),
                }
                for row in versions
            ],
        }
        return json_response(body)

    return get_item


async def register(request: web.Request) -> web.Response:
    require_admin(request)
    if request.content_type not in BUNDLE_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            "a bundle is JSON (application/json) or YAML (application/yaml)",
        )
    ctx = context(request)
    reply = await registration_reply(ctx.definitions, await request.read(), request.content_type)
    if not reply["ok"]:
        # The §6 reply, plus the API's error shape for clients that only know that.
        count = len(reply["errors"])
        message = reply["errors"][0]["message"] if count == 1 else f"{count} problems"
        if reply.get("retryable"):
            body = {**reply, **error_body("registration_conflict", message)}
            return json_response(body, 503, headers={"Retry-After": "1"})
        return json_response({**reply, **error_body("invalid_bundle", message)}, 400)
    if any(result["changed"] for result in reply["results"]):
        try:
            await ctx.announce()
        except Exception:
            # Registered all the same: every replica reloads at its next start,
            # and this one at the next registration.
            logger.exception("registered, but reloading or announcing the change failed")
    return json_response(reply)
