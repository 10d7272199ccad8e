"""Calls to downstream services (§5.2): one pooled aiohttp session per configured service.

Only base URLs from configuration are ever contacted. Request data supplies an
already percent-encoded path and query values, never a host, and redirects are
followed by hand, only within the service's own origin (RELIABILITY.md, "HTTP
downstream"). A call that produces no usable HTTP answer raises `HttpCallError`,
whose `retryable` tells the caller whether another attempt could help; an HTTP
error status is returned, because retrying on status is the caller's policy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from blobflow import __version__
from blobflow.core.jsonvalues import compact_json, loads
from blobflow.core.step_requests import HttpResponse, StepRequest
from blobflow.errors import ConfigError, HttpCallError

USER_AGENT: Final = f"blobflow/{__version__}"
MAX_REDIRECTS: Final = 3
ERROR_TEXT_CHARS: Final = 2000
PREVIEW_CHARS: Final = 200

_ENV_VAR: Final = re.compile(r"BLOBFLOW_SERVICE_(.+)_URL")
_NON_ALNUM: Final = re.compile(r"[^A-Za-z0-9]")
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_KEEPS_METHOD: Final = frozenset({307, 308})
# The client owns routing and framing; a request's own headers must not override them.
_RESERVED_HEADERS: Final = frozenset({"host", "content-length", "transfer-encoding", "connection"})
# A character that may not appear raw in a path, or a `%` that starts no escape. Endpoint
# text outside the placeholders comes from definitions unencoded: encode just those, so
# valid escapes such as `%2F` are neither doubled nor undone.
_UNSAFE_IN_PATH: Final = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]")


def service_env_var(name: str) -> str:
    """`studio` -> `BLOBFLOW_SERVICE_STUDIO_URL`; non-alphanumerics become `_`."""
    return f"BLOBFLOW_SERVICE_{_normalize(name)}_URL"


def service_urls_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """{NAME: base URL} from every `BLOBFLOW_SERVICE_<NAME>_URL`; ConfigError if one is bad."""
    urls: dict[str, str] = {}
    source: dict[str, str] = {}
    problems: list[str] = []
    for var in sorted(environ):
        match = _ENV_VAR.fullmatch(var)
        if match is None:
            continue
        name, value = _normalize(match.group(1)), environ[var].strip()
        problem = _base_url_problem(value)
        if problem is not None:
            problems.append(f"{var}: {problem}")
        elif name in source:
            problems.append(f"{var}: service {name} is already configured by {source[name]}")
        else:
            urls[name], source[name] = value, var
    if problems:
        raise ConfigError("\n".join(problems))
    return urls


class ServiceClients:
    """Async context manager: one aiohttp session (a keep-alive pool) per service."""

    def __init__(
        self,
        base_urls: Mapping[str, str],
        *,
        max_body_bytes: int = 10 * 1024 * 1024,
        max_connections_per_service: int = 100,
    ) -> None:
        problems = [
            f"service {name}: {problem}"
            for name, url in base_urls.items()
            if (problem := _base_url_problem(url)) is not None
        ]
        if problems:
            raise ConfigError("\n".join(problems))
        self._bases = {_normalize(name): URL(url.strip()) for name, url in base_urls.items()}
        self._max_body = max_body_bytes
        self._max_connections = max_connections_per_service
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def knows(self, service: str) -> bool:
        return _normalize(service) in self._bases

    async def __aenter__(self) -> Self:
        for name in self._bases:
            self._sessions[name] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # Cookies would carry state from one execution into another.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(session.close() for session in sessions))

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse:
        """One attempt, redirects and body included, within `timeout_s` seconds."""
        name = _normalize(service)
        base = self._bases.get(name)
        if base is None:
            raise HttpCallError(
                "unknown_service",
                f"service {service!r} is not configured: set {service_env_var(service)}",
                retryable=False,
            )
        session = self._sessions.get(name)
        if session is None:
            raise RuntimeError("ServiceClients is not open: use `async with ServiceClients(...)`")
        url = _join(base, request)
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _RESERVED_HEADERS
        )
        headers["Accept"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        body = None
        if request.json_body is not None:
            # compact_json is orjson, with a stdlib fallback for integers beyond 64 bits.
            body = compact_json(request.json_body).encode()
            headers["Content-Type"] = "application/json"
        label = f"service {service!r}"
        method, client_timeout = request.method, aiohttp.ClientTimeout(total=timeout_s)
        try:
            # One deadline for the whole attempt: every redirect hop and the body read.
            async with asyncio.timeout(timeout_s):
                for _ in range(MAX_REDIRECTS + 1):
                    # aiohttp's own timeout as well: on expiry it closes the connection itself.
                    async with session.request(
                        method,
                        url,
                        headers=headers,
                        data=body,
                        allow_redirects=False,
                        timeout=client_timeout,
                    ) as response:
                        if response.status not in _REDIRECTS:
                            return await self._read(response, label)
                        status, location = response.status, response.headers.get("Location")
                    url = _redirect_target(base, url, status, location, label)
                    if status not in _KEEPS_METHOD and method != "HEAD":
                        method, body = "GET", None
                        headers.popall("Content-Type", None)
                raise HttpCallError("redirect", f"{label}: more than {MAX_REDIRECTS} redirects")
        # Before ClientError: aiohttp's own timeouts are ClientErrors too.
        except TimeoutError:
            raise HttpCallError("timeout", f"{label}: no answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            # Refused, reset, DNS, disconnected, or a broken answer: all may pass.
            detail = str(exc) or "connection lost"
            raise HttpCallError("connect", f"{label}: {type(exc).__name__}: {detail}") from exc

    async def _read(self, response: aiohttp.ClientResponse, label: str) -> HttpResponse:
        ok = 200 <= response.status < 300
        raw = await _read_capped(response, self._max_body)
        if raw is None:
            response.close()  # drop the connection rather than drain the rest
            too_large = f"response body larger than {self._max_body} bytes"
            if ok:
                raise HttpCallError("too_large", f"{label}: HTTP {response.status}: {too_large}")
            # Keep the status: whether an error answer is worth retrying is the caller's call.
            return HttpResponse(response.status, f"({too_large}, not read)", response.headers)
        if not ok:
            return HttpResponse(response.status, _error_body(raw), response.headers)
        try:
            parsed = loads(raw) if raw else None
        except ValueError as exc:
            preview = raw[:PREVIEW_CHARS].decode("utf-8", errors="replace")
            content_type = response.headers.get("Content-Type", "none")
            raise HttpCallError(
                "not_json",
                f"{label}: HTTP {response.status} answer is not JSON ({exc}; "
                f"Content-Type: {content_type}): {preview!r}",
            ) from None
        return HttpResponse(response.status, parsed, response.headers)


async def _read_capped(response: aiohttp.ClientResponse, cap: int) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed `cap` bytes."""
    if response.content_length is not None and response.content_length > cap:
        return None
    data = bytearray()
    # Chunk by chunk, so an endless or lying body costs at most one chunk past the cap.
    async for chunk in response.content.iter_any():
        data += chunk
        if len(data) > cap:
            return None
    return bytes(data)


def _error_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")[:ERROR_TEXT_CHARS]


def normalize_service_name(name: str) -> str:
    """`studio` -> `STUDIO`, as in `BLOBFLOW_SERVICE_STUDIO_URL`."""
    return _normalize(name)


def _normalize(name: str) -> str:
    return _NON_ALNUM.sub("_", name).upper()


def _base_url_problem(value: str) -> str | None:
    # A URL may hold a password, and configuration errors end up in logs.
    shown = "(a value with credentials)" if "@" in value else repr(value)
    try:
        url = URL(value.strip())
    except (ValueError, TypeError) as exc:
        return f"not a valid URL ({exc})"
    if url.scheme not in ("http", "https") or not url.host:
        return f"must be an absolute http:// or https:// URL, not {shown}"
    if url.raw_query_string or url.raw_fragment:
        return f"must have no query or fragment (step paths are appended), not {shown}"
    return None


def _join(base: URL, request: StepRequest) -> URL:
    if not request.path.startswith("/"):
        raise ValueError(f"a request path must start with '/': {request.path!r}")
    path = _UNSAFE_IN_PATH.sub(lambda m: quote(m.group(), safe=""), request.path)
    # Built from the base's parts, so nothing in the path can reach the authority; encoded=True
    # sends the path exactly as given (a blob id `a/b` stays one segment, `a%2Fb`).
    url = URL.build(
        scheme=base.scheme,
        authority=base.raw_authority,
        path=base.raw_path.rstrip("/") + path,
        encoded=True,
    )
    return url.extend_query(request.query) if request.query else url


def _redirect_target(base: URL, current: URL, status: int, location: str | None, label: str) -> URL:
    if not location:
        raise HttpCallError("redirect", f"{label}: HTTP {status} redirect without a Location")
    try:
        target = current.join(URL(location))
    except ValueError:
        raise HttpCallError("redirect", f"{label}: unusable Location {location!r}") from None
    # `port` is the explicit port, else the scheme's default: http://h and http://h:80 match.
    if (target.scheme, target.host, target.port) != (base.scheme, base.host, base.port):
        shown = target.with_user(None).with_query(None).with_fragment(None)
        raise HttpCallError(
            "redirect",
            f"{label}: refused HTTP {status} redirect to {shown}: only {base.origin()} may be "
            "called",
        )
    return target.with_fragment(None)
