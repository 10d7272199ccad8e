"""Who is calling, and whether they may: bearer tokens, then the per-client rate limit.

The client is identified before anything is refused, so wrong tokens are rate
limited too (by address) and cannot be tried at full speed. Tokens are
identified by `blobflow.core.tokens.TokenTable` (constant-time comparison of
digests), the same as on NATS control subjects; a token never appears in a log line.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from blobflow.api.ratelimit import RateLimiter, Verdict, retry_after_header
from blobflow.core.tokens import ANONYMOUS, NOBODY, ApiToken, Principal, TokenTable, bearer_token
from blobflow.errors import ApiError

__all__ = [
    "ANONYMOUS",
    "EXEMPT_PATHS",
    "NOBODY",
    "PRINCIPAL",
    "PROTECTED_PREFIX",
    "VERDICT",
    "Access",
    "Principal",
    "caller_token",
    "principal",
    "rate_headers",
    "require_admin",
]

# Cheap and needed by probes and scrapers that hold no token.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PROTECTED_PREFIX = "/v1/"
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
VERDICT: web.RequestKey[Verdict] = web.RequestKey("rate_verdict", Verdict)


class Access:
    def __init__(self, tokens: Sequence[ApiToken], limiter: RateLimiter) -> None:
        self.tokens = TokenTable(tokens)
        self.limiter = limiter

    @property
    def enabled(self) -> bool:
        return self.tokens.enabled

    def identify(self, authorization: str | None) -> tuple[ApiToken | None, str | None]:
        """The token entry presented, and its digest (a rate-limit key that is no secret)."""
        return self.tokens.identify(authorization)

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


def caller_token(request: web.Request) -> str | None:
    """The bearer token the request presented, to pass on to another replica."""
    return bearer_token(request.headers.get("Authorization"))
