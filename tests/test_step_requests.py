"""Step requests: path placeholders, query or body, idempotency key, the recorded snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from blobflow.core.step_requests import StepRequest, build_request, idempotency_key
from blobflow.errors import BlobflowError, StepInputError

KEY = "exec-1:step-a"
EVENT = {"blob_id": "b-1", "user_id": "u-1", "n": 3}


def build(
    method: str, endpoint: str, resolved: Any, workflow_input: Mapping[str, Any] = EVENT
) -> StepRequest:
    return build_request(method, endpoint, resolved, workflow_input, KEY)


# ---------------------------------------------------------------- path placeholders


@pytest.mark.parametrize(
    ("endpoint", "resolved", "expected"),
    [
        pytest.param("/v1/things", {}, "/v1/things", id="no-placeholders"),
        pytest.param("/blobs/{blob_id}", {}, "/blobs/b-1", id="from-workflow-input"),
        pytest.param("/blobs/{blob_id}", {"blob_id": "x"}, "/blobs/x", id="input-map-wins"),
        pytest.param("/blobs/{blob_id}", [1, 2], "/blobs/b-1", id="list-input-uses-event"),
        pytest.param("/a/{n}/b/{n}", {}, "/a/3/b/3", id="used-twice"),
        pytest.param("/x/{v}", {"v": 7}, "/x/7", id="integer"),
        pytest.param("/x/{v}", {"v": -1.5}, "/x/-1.5", id="float"),
        pytest.param("/x/{v}", {"v": 2**70}, f"/x/{2**70}", id="big-integer"),
        pytest.param("/x/{v}", {"v": True}, "/x/true", id="true"),
        pytest.param("/x/{v}", {"v": False}, "/x/false", id="false"),
        pytest.param("/x/{v}", {"v": "a/b"}, "/x/a%2Fb", id="slash-encoded"),
        pytest.param("/x/{v}", {"v": "a b?c#d"}, "/x/a%20b%3Fc%23d", id="reserved-encoded"),
        pytest.param("/x/{v}", {"v": "%2F"}, "/x/%252F", id="percent-encoded-again"),
        pytest.param("/x/{v}", {"v": "é€"}, "/x/%C3%A9%E2%82%AC", id="unicode-utf8"),
        pytest.param("/x/{v}", {"v": "."}, "/x/%2E", id="dot"),
        pytest.param("/x/{v}", {"v": ".."}, "/x/%2E%2E", id="dot-dot"),
        pytest.param("/x/{v}", {"v": "../admin"}, "/x/..%2Fadmin", id="dot-dot-slash"),
        pytest.param("/x/{v}", {"v": "..."}, "/x/...", id="three-dots-are-a-name"),
        pytest.param("/x/{v}.json", {"v": ".."}, "/x/%2E%2E.json", id="dot-dot-within-segment"),
        pytest.param("/x/{a}-{b}", {"a": "1", "b": "2"}, "/x/1-2", id="two-in-one-segment"),
    ],
)
def test_path(endpoint: str, resolved: Any, expected: str) -> None:
    assert build("POST", endpoint, resolved).path == expected


@pytest.mark.parametrize(
    ("endpoint", "resolved", "workflow_input", "message"),
    [
        pytest.param(
            "/blobs/{blob_id}",
            {},
            {},
            "endpoint placeholder {blob_id} has no value in input_map or $.input",
            id="missing-everywhere",
        ),
        pytest.param(
            "/blobs/{blob_id}",
            {"blob_id": None},
            EVENT,
            "{blob_id} must be a string, number or boolean, not null",
            id="input-map-null-does-not-fall-back",
        ),
        pytest.param("/x/{v}", {"v": {"a": 1}}, {}, "{v} must be .* not object", id="object-value"),
        pytest.param("/x/{v}", {"v": [1]}, {}, "{v} must be .* not array", id="array-value"),
        pytest.param("/x/{v}", {"v": ""}, {}, "{v} is an empty string", id="empty-string"),
        pytest.param("/x/{v}", {}, {"v": ""}, "{v} is an empty string", id="empty-from-event"),
        pytest.param("/x/{v}", {}, {"v": None}, "{v} must be .* not null", id="null-from-event"),
        pytest.param(
            "/x/{v}", {"v": float("nan")}, {}, "{v} must be .* not float", id="nan-is-not-json"
        ),
    ],
)
def test_path_errors(
    endpoint: str, resolved: Any, workflow_input: Mapping[str, Any], message: str
) -> None:
    with pytest.raises(StepInputError, match=message.replace("{", r"\{").replace("$", r"\$")):
        build("POST", endpoint, resolved, workflow_input)


def test_step_input_error_family() -> None:
    assert issubclass(StepInputError, BlobflowError)
    assert issubclass(StepInputError, ValueError)


# ---------------------------------------------------------------- query and body


@pytest.mark.parametrize(
    ("method", "endpoint", "resolved", "query", "body"),
    [
        pytest.param("POST", "/x", {"a": 1}, (), {"a": 1}, id="post-body"),
        pytest.param("PUT", "/x", {}, (), {}, id="put-empty-body"),
        pytest.param("PATCH", "/x", None, (), {}, id="patch-no-input-is-empty-object"),
        pytest.param("POST", "/x", [1, 2], (), [1, 2], id="post-list-as-is"),
        pytest.param("POST", "/x", "text", (), "text", id="post-string-as-is"),
        pytest.param(
            "POST", "/b/{id}", {"id": "1", "a": 2}, (), {"a": 2}, id="post-path-key-dropped"
        ),
        pytest.param(
            "POST",
            "/b/{blob_id}",
            {"blob_id": "x", "user_id": "u"},
            (),
            {"user_id": "u"},
            id="post-only-path-keys-dropped",
        ),
        pytest.param(
            "POST", "/b/{blob_id}", {"a": 1}, (), {"a": 1}, id="post-event-key-never-in-body"
        ),
        pytest.param(
            "GET",
            "/x",
            {"s": "a b", "n": 1, "f": 1.5, "t": True, "z": None, "l": [1, "x"], "o": {"k": 1}},
            (
                ("s", "a b"),
                ("n", "1"),
                ("f", "1.5"),
                ("t", "true"),
                ("l", '[1,"x"]'),
                ("o", '{"k":1}'),
            ),
            None,
            id="get-query-values",
        ),
        pytest.param(
            "GET", "/x", {"b": "2", "a": "1"}, (("b", "2"), ("a", "1")), None, id="get-key-order"
        ),
        pytest.param("GET", "/x", {"e": ""}, (("e", ""),), None, id="get-empty-string-kept"),
        pytest.param("GET", "/x", {}, (), None, id="get-empty"),
        pytest.param("GET", "/x", None, (), None, id="get-no-input"),
        pytest.param(
            "DELETE",
            "/b/{id}",
            {"id": 5, "hard": True},
            (("hard", "true"),),
            None,
            id="delete-path-key-dropped",
        ),
        pytest.param("delete", "/x", {"a": "1"}, (("a", "1"),), None, id="lowercase-method"),
    ],
)
def test_query_and_body(
    method: str, endpoint: str, resolved: Any, query: tuple[tuple[str, str], ...], body: Any
) -> None:
    request = build(method, endpoint, resolved)
    assert request.method == method.upper()
    assert request.query == query
    assert request.json_body == body


def test_path_keys_are_not_removed_from_the_callers_input() -> None:
    resolved = {"id": "1", "a": 2}
    build("POST", "/b/{id}", resolved)
    assert resolved == {"id": "1", "a": 2}


@pytest.mark.parametrize(
    ("method", "resolved"),
    [
        pytest.param("GET", [1, 2], id="get-list"),
        pytest.param("DELETE", "text", id="delete-string"),
        pytest.param("GET", 5, id="get-number"),
    ],
)
def test_query_needs_an_object(method: str, resolved: Any) -> None:
    with pytest.raises(StepInputError, match=f"{method} sends input_map as query parameters"):
        build(method, "/x", resolved)


def test_unknown_method() -> None:
    with pytest.raises(StepInputError, match="unsupported HTTP method 'HEAD'"):
        build("HEAD", "/x", {})


# ---------------------------------------------------------------- headers


def test_idempotency_key() -> None:
    assert idempotency_key("exec-1", "step-a") == "exec-1:step-a"
    request = build("GET", "/x", {})
    assert dict(request.headers) == {"Idempotency-Key": KEY}


def test_headers_are_read_only() -> None:
    request = build("GET", "/x", {})
    with pytest.raises(TypeError):
        request.headers["X"] = "y"  # type: ignore[index]


# ---------------------------------------------------------------- snapshot


def test_snapshot_of_a_get() -> None:
    request = build("GET", "/b/{blob_id}", {"q": "x"})
    assert request.snapshot() == {
        "method": "GET",
        "path": "/b/b-1",
        "query": {"q": "x"},
        "body": None,
        "headers": {"Idempotency-Key": KEY},
    }


@pytest.mark.parametrize(
    ("body", "limit", "expected"),
    [
        pytest.param({"a": "é"}, 2000, '{"a":"é"}', id="short-unescaped"),
        pytest.param({}, 2000, "{}", id="empty"),
        pytest.param("abcdef", 8, '"abcdef"', id="exactly-limit"),
        pytest.param("abcdefg", 8, '"abcdefg…(truncated 1 chars)', id="one-over"),
        pytest.param("x" * 5000, 10, '"xxxxxxxxx…(truncated 4992 chars)', id="long"),
        pytest.param([1], 0, "…(truncated 3 chars)", id="zero-limit"),
    ],
)
def test_snapshot_body(body: Any, limit: int, expected: str) -> None:
    assert build("POST", "/x", body).snapshot(limit)["body"] == expected


@pytest.mark.parametrize(
    ("name", "redacted"),
    [
        pytest.param("Authorization", True, id="authorization"),
        pytest.param("proxy-authorization", True, id="proxy-authorization"),
        pytest.param("X-Auth-Token", True, id="token"),
        pytest.param("X-Client-SECRET", True, id="secret-upper"),
        pytest.param("Cookie", True, id="cookie"),
        pytest.param("Set-Cookie", True, id="set-cookie"),
        pytest.param("X-Api-Key", True, id="api-key"),
        pytest.param("x_api_key", True, id="api-key-underscores"),
        pytest.param("Idempotency-Key", False, id="idempotency-key"),
        pytest.param("Content-Type", False, id="content-type"),
        pytest.param("X-Request-Id", False, id="request-id"),
    ],
)
def test_snapshot_redacts_secret_headers(name: str, redacted: bool) -> None:
    request = StepRequest("GET", "/x", (), None, {name: "s3cr3t"})
    assert request.snapshot()["headers"] == {name: "[redacted]" if redacted else "s3cr3t"}
