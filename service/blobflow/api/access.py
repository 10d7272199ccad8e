"""Who is calling, and whether they may: bearer tokens, then the per-client rate limit.

The client is identified before anything is refused, so wrong tokens are rate
limited too (by address) and cannot be tried at full speed. Tokens are
compared as SHA-256 digests with `hmac.compare_digest` against every
configured entry, so the time taken does not depend on which entry matched or
how much of a token was right; a token never appears in a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from blobflow.api.ratelimit import RateLimiter, Verdict, retry_after_header
from blobflow.core.tokens import ApiToken
from blobflow.errors import ApiError

# Cheap and needed by probes and scrapers that hold no token.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PROTECTED_PREFIX = "/v1/"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request."""

    user_id: str | None
    admin: bool

    def sees(self, owner: str) -> bool:
        return self.admin or self.user_id == owner


# Authentication off: every caller may do everything (a warning at start says so).
ANONYMOUS = Principal(None, admin=True)
# Authentication on, no valid token, on a route that needs none.
NOBODY = Principal(None, admin=False)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
VERDICT: web.RequestKey[Verdict] = web.RequestKey("rate_verdict", Verdict)


class Access:
    def __init__(self, tokens: Sequence[ApiToken], limiter: RateLimiter) -> None:
        self._tokens = [(_digest(t.token), t) for t in tokens]
        self.limiter = limiter

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def identify(self, authorization: str | None) -> tuple[ApiToken | None, str | None]:
        """The token entry presented, and its digest (a rate-limit key that is no secret)."""
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None, None
        digest = _digest(presented.strip())
        found = None
        for known, entry in self._tokens:
            # No early exit: every entry is compared, whichever matches.
            if hmac.compare_digest(known, digest):
                found = entry
        return found, digest.hex()[:24] if found else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in EXEMPT_PATHS:
            return await handler(request)
        entry, key = self.identify(request.headers.get("Authorization"))
        client = f"token:{key}" if key else f"address:{request.remote or 'unknown'}"
        verdict = self.limiter.check(client)
        request[VERDICT] = verdict
        if not verdict.allowed:
            raise ApiError(
                429,
                "rate_limited",
                "too many requests; retry after the time in Retry-After",
                headers={"Retry-After": retry_after_header(verdict)},
            )
        if not self.enabled:
            request[PRINCIPAL] = ANONYMOUS
        elif entry is not None:
            request[PRINCIPAL] = Principal(entry.user_id, entry.admin)
        elif not request.path.startswith(PROTECTED_PREFIX):
            request[PRINCIPAL] = NOBODY
        else:
            raise ApiError(
                401,
                "unauthorized",
                "a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": 'Bearer realm="blobflow"'},
            )
        return await handler(request)


async def rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`RateLimit-*` on every limited response, errors and streams included."""
    verdict = request.get(VERDICT)
    if verdict is not None:
        response.headers["RateLimit-Limit"] = str(verdict.limit)
        response.headers["RateLimit-Remaining"] = str(verdict.remaining)


def principal(request: web.Request) -> Principal:
    found: Principal = request.get(PRINCIPAL, NOBODY)
    return found


def require_admin(request: web.Request) -> Principal:
    caller = principal(request)
    if not caller.admin:
        raise ApiError(403, "forbidden", "this route needs an admin token")
    return caller


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
