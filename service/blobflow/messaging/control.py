"""Who sends a request on a control subject (CONTRACT §2): its `Authorization` header.

A request on `blobflow.registry.register` or `blobflow.cancel.<worker_id>` carries
`Authorization: Bearer <token>`, and is authorized as the same request over HTTP
would be, by the same `TokenTable`. NATS permissions on `blobflow.>` come on top
(deploy/nats-auth.conf); blobflow does not rely on them alone.
"""

from __future__ import annotations

from collections.abc import Mapping

from blobflow.core.tokens import Principal, TokenTable, bearer


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value; names are case-insensitive, and NATS clients spell them as they like."""
    wanted = name.lower()
    return next((v for k, v in (headers or {}).items() if k.lower() == wanted), None)


def caller(tokens: TokenTable, headers: Mapping[str, str] | None) -> Principal | None:
    """The request's sender: ANONYMOUS without tokens configured, None without a valid token."""
    return tokens.principal(header(headers, "Authorization"))


def authorization(token: str | None) -> dict[str, str]:
    """The headers that present `token` (none for None)."""
    return {} if token is None else {"Authorization": bearer(token)}
