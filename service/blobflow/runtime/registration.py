"""Registering a bundle: what NATS requests and `POST /v1/registry` both do.

The registry applies a bundle all or nothing (`blobflow.store.definitions`);
this turns its outcome, or the bundle's problems, into the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from blobflow.core.bundles import (
    ItemResult,
    error_reply,
    failure_reply,
    parse_bundle,
    results_reply,
)
from blobflow.core.sources import SourceDocument
from blobflow.errors import DefinitionError, RegistrationConflict


class Registry(Protocol):
    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]: ...


async def register_bundle(
    registry: Registry, documents: Sequence[SourceDocument]
) -> dict[str, Any]:
    """Register the documents; the §6 reply either way (other failures propagate)."""
    if not documents:
        return {"ok": True, "results": []}
    try:
        results = await registry.register(documents)
    except DefinitionError as exc:
        return error_reply(exc, documents)
    except RegistrationConflict as exc:
        # Not the bundle's fault and not a bug: the requester may simply try again.
        return {**failure_reply(str(exc)), "retryable": True}
    return results_reply(results)


async def registration_reply(
    registry: Registry, payload: bytes, content_type: str | None = None
) -> dict[str, Any]:
    """Parse and register one request's payload: what NATS and HTTP both answer."""
    try:
        documents = parse_bundle(payload, content_type)
    except DefinitionError as exc:
        return error_reply(exc)
    return await register_bundle(registry, documents)
