"""A step request: the one HTTP call an `api_call` step makes, built from resolved data (§5.2).

Building it is pure so that every refusal (a placeholder without a value, a
value that could walk the path) happens before anything is sent, and so that
the execution record can keep a faithful, redacted snapshot of what was sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol
from urllib.parse import quote

from blobflow.core.jsonvalues import compact_json, kind
from blobflow.errors import StepInputError

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
QUERY_METHODS = frozenset({"GET", "DELETE"})
IDEMPOTENCY_HEADER = "Idempotency-Key"
REDACTED = "[redacted]"

# The same placeholder syntax that `definitions.check_endpoint` accepts at registration.
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_SECRET_HEADER_WORDS = ("authorization", "token", "secret", "cookie", "api-key")
# `quote` leaves dots alone, and a segment of only dots would walk up the path.
_DOT_SEGMENTS = {".": "%2E", "..": "%2E%2E"}


@dataclass(frozen=True, slots=True)
class StepRequest:
    method: str
    path: str  # placeholders filled, each value percent-encoded as one segment
    query: tuple[tuple[str, str], ...]  # GET and DELETE only
    json_body: Any | None  # None for GET and DELETE, which send no body
    headers: Mapping[str, str]

    def snapshot(self, max_body_chars: int = 2000) -> dict[str, Any]:
        """What the execution record keeps: secrets redacted, a long body truncated."""
        body = None if self.json_body is None else compact_json(self.json_body)
        if body is not None and len(body) > max_body_chars:
            cut = len(body) - max_body_chars
            body = f"{body[:max_body_chars]}…(truncated {cut} chars)"
        return {
            "method": self.method,
            "path": self.path,
            "query": dict(self.query),
            "body": body,
            "headers": {
                name: REDACTED if is_secret_header(name) else value
                for name, value in self.headers.items()
            },
        }


def is_secret_header(name: str) -> bool:
    """Whether a header's value must never reach the execution record."""
    folded = name.lower().replace("_", "-")
    return any(word in folded for word in _SECRET_HEADER_WORDS)


def idempotency_key(execution_id: str, step_id: str) -> str:
    """Stable across retries and resumes, so downstream can drop a repeated call."""
    return f"{execution_id}:{step_id}"


def build_request(
    method: str,
    endpoint: str,
    resolved_input: Any,
    workflow_input: Mapping[str, Any],
    idempotency_key: str,
) -> StepRequest:
    """The request for one attempt; raises StepInputError when it cannot be built."""
    method = method.upper()
    if method not in METHODS:
        raise StepInputError(f"unsupported HTTP method {method!r}")
    # No input at all is an empty object: a JSON body of `null` would read as "no body".
    data: Any = {} if resolved_input is None else resolved_input
    path_keys: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if isinstance(data, dict) and name in data:
            value = data[name]
            path_keys.add(name)
        elif name in workflow_input:
            value = workflow_input[name]
        else:
            raise StepInputError(
                f"endpoint placeholder {{{name}}} has no value in input_map or $.input"
            )
        return _segment(name, value)

    path = _PLACEHOLDER.sub(fill, endpoint)
    rest = {k: v for k, v in data.items() if k not in path_keys} if isinstance(data, dict) else data
    headers = MappingProxyType({IDEMPOTENCY_HEADER: idempotency_key})
    if method in QUERY_METHODS:
        if not isinstance(rest, dict):
            raise StepInputError(
                f"{method} sends input_map as query parameters, so it must be an object, "
                f"not {kind(rest) or type(rest).__name__}"
            )
        query = tuple(
            (str(k), v if isinstance(v, str) else compact_json(v))
            for k, v in rest.items()
            if v is not None
        )
        return StepRequest(method, path, query, None, headers)
    return StepRequest(method, path, (), rest, headers)


def _segment(name: str, value: Any) -> str:
    """One path segment from a scalar; anything else has no single sensible spelling."""
    value_kind = kind(value)
    if value_kind not in ("string", "number", "boolean"):
        raise StepInputError(
            f"endpoint placeholder {{{name}}} must be a string, number or boolean, "
            f"not {value_kind or type(value).__name__}"
        )
    text = value if isinstance(value, str) else compact_json(value)
    if not text:
        raise StepInputError(f"endpoint placeholder {{{name}}} is an empty string")
    return _DOT_SEGMENTS.get(text) or quote(text, safe="")


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP answer: `body` is parsed JSON (None when empty), or for a non-2xx
    answer that is not JSON its text, cut to 2,000 characters."""

    status: int
    body: Any
    headers: Mapping[str, str]  # case-insensitive


class Caller(Protocol):
    """Sends a step's request to a named downstream service (`blobflow.downstream`)."""

    async def call(self, service: str, request: StepRequest, timeout_s: float) -> HttpResponse: ...
