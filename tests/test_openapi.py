"""The OpenAPI document (`blobflow/api/openapi.yaml`) is well formed and says what the code does.

No server is started. The document is checked as OpenAPI 3.1 by hand (structure, references,
JSON Schema 2020-12 schemas), against the routes the app registers, and against what the
handlers answer: each runs on `make_mocked_request` behind the app's own error and access
middlewares, with stand-ins for the database, and its status, headers and body must be what the
document gives that operation.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args, get_type_hints
from unittest import mock

import jsonschema_rs
import orjson
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from blobflow.api import definitions as definition_routes
from blobflow.api import executions as execution_routes
from blobflow.api import logs as log_routes
from blobflow.api.access import EXEMPT_PATHS, PROTECTED_PREFIX, Access
from blobflow.api.app import MAX_BODY_BYTES, api_app, openapi_document, routes
from blobflow.api.context import ApiContext
from blobflow.api.executions import MAX_PENDING_MANUAL_RUNS
from blobflow.api.health import Probe, health_routes
from blobflow.api.ratelimit import RateLimiter
from blobflow.api.responses import errors_as_json, json_response
from blobflow.core.bundles import ItemResult
from blobflow.core.catalog import Catalog, build_catalog
from blobflow.core.definitions import Kind
from blobflow.core.deltas import DeltaDraft, delta_document
from blobflow.core.listings import LIST_FILTERS, SUMMARY_FIELDS, ExecutionLogs, Page
from blobflow.core.records import (
    Decision,
    Execution,
    ExecutionStatus,
    LogLevel,
    LogLine,
    StepRecord,
    StepStatus,
    log_document,
    to_document,
)
from blobflow.core.sources import SourceDocument, read_paths
from blobflow.core.tokens import ApiToken
from blobflow.core.yamlsafe import load_yaml
from blobflow.errors import RegistrationConflict, ServiceStopping, StoreUnavailable
from blobflow.metrics import Metrics
from blobflow.runtime.cancellation import CancelResult
from blobflow.runtime.submission import idempotent_id

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "service" / "blobflow" / "api" / "openapi.yaml"
DOCUMENT: Json = openapi_document()
DIALECT = "https://json-schema.org/draft/2020-12/schema"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# The fields OpenAPI 3.1 allows on each object (`x-` extensions aside).
ROOT_FIELDS = {
    "openapi",
    "info",
    "jsonSchemaDialect",
    "servers",
    "paths",
    "webhooks",
    "components",
    "security",
    "tags",
    "externalDocs",
}
INFO_FIELDS = {"title", "summary", "description", "termsOfService", "contact", "license", "version"}
COMPONENT_KINDS = {
    "schemas",
    "responses",
    "parameters",
    "examples",
    "requestBodies",
    "headers",
    "securitySchemes",
    "links",
    "callbacks",
    "pathItems",
}
PATH_ITEM_FIELDS = {"$ref", "summary", "description", "servers", "parameters", *METHODS}
OPERATION_FIELDS = {
    "tags",
    "summary",
    "description",
    "externalDocs",
    "operationId",
    "parameters",
    "requestBody",
    "responses",
    "callbacks",
    "deprecated",
    "security",
    "servers",
}
PARAMETER_FIELDS = {
    "name",
    "in",
    "description",
    "required",
    "deprecated",
    "allowEmptyValue",
    "style",
    "explode",
    "allowReserved",
    "schema",
    "example",
    "examples",
    "content",
}
HEADER_FIELDS = PARAMETER_FIELDS - {"name", "in", "allowEmptyValue", "allowReserved"}
RESPONSE_FIELDS = {"description", "headers", "content", "links"}
REQUEST_BODY_FIELDS = {"description", "content", "required"}
MEDIA_TYPE_FIELDS = {"schema", "example", "examples", "encoding"}
REFERENCE_FIELDS = {"$ref", "summary", "description"}
STATUS_KEY = re.compile(r"[1-5](?:[0-9]{2}|XX)|default")
MEDIA_TYPE = re.compile(r"[a-z]+/[a-z0-9.+-]+")
COMPONENT_NAME = re.compile(r"[A-Za-z0-9._-]+")
TEMPLATE_PARAMETER = re.compile(r"{([^{}/]+)}")


# -- reading the document --------------------------------------------------------------------


def resolve(ref: str) -> Any:
    """The value a local reference (`#/components/...`) points at."""
    assert ref.startswith("#/"), f"{ref}: only references inside the document are used"
    node: Any = DOCUMENT
    for token in ref[2:].split("/"):
        key = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict), f"{ref}: {key!r} is looked up in a non-mapping"
        assert key in node, f"{ref} does not resolve"
        node = node[key]
    return node


def deref(node: Any) -> Any:
    """An OpenAPI object (parameter, response, header ...) with its reference followed."""
    for _ in range(10):
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        node = resolve(node["$ref"])
    raise AssertionError("a chain of references longer than 10")


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def operations() -> list[tuple[str, str, Json]]:
    return [
        (path, method, operation)
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


OPERATIONS = operations()
OPERATION_IDS = [f"{method.upper()} {path}" for path, method, _ in OPERATIONS]


def parameters_of(path: str, method: str) -> list[Json]:
    """Every parameter of an operation, the path item's included, references followed."""
    item = DOCUMENT["paths"][path]
    declared = [*item.get("parameters", []), *item[method].get("parameters", [])]
    return [deref(parameter) for parameter in declared]


def query_parameter(path: str, name: str, method: str = "get") -> Json:
    found = [p for p in parameters_of(path, method) if p["in"] == "query" and p["name"] == name]
    assert len(found) == 1, f"{method.upper()} {path} declares query parameter {name!r} once"
    return found[0]


def response_of(path: str, method: str, status: int) -> Json:
    responses = DOCUMENT["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    found: Json = deref(responses[str(status)])
    return found


def schema_objects() -> Iterator[tuple[str, Any]]:
    """Every schema in the document, named by where it is."""
    components = DOCUMENT["components"]
    for name, schema in components["schemas"].items():
        yield f"#/components/schemas/{name}", schema
    holders: list[tuple[str, Any]] = [
        (f"#/components/{kind}/{name}", value)
        for kind in ("parameters", "headers", "responses", "requestBodies")
        for name, value in components.get(kind, {}).items()
    ]
    for path, method, operation in OPERATIONS:
        where = f"{method.upper()} {path}"
        holders += [(f"{where} parameter", p) for p in operation.get("parameters", [])]
        holders.append((f"{where} requestBody", operation.get("requestBody", {})))
        for status, response in operation["responses"].items():
            holders.append((f"{where} {status}", response))
            holders += [
                (f"{where} {status} header {name}", header)
                for name, header in response.get("headers", {}).items()
            ]
    for path, item in DOCUMENT["paths"].items():
        holders += [(f"{path} parameter", p) for p in item.get("parameters", [])]
    for where, holder in holders:
        if "$ref" in holder:
            continue
        if "schema" in holder:
            yield where, holder["schema"]
        for media_type, media in holder.get("content", {}).items():
            yield f"{where} {media_type}", media["schema"]


def validator(schema: Any) -> jsonschema_rs.Validator:
    """A validator for a schema of the document, its `#/components/...` references resolved."""
    root = {"$schema": DIALECT, "components": DOCUMENT["components"], **schema}
    return jsonschema_rs.validator_for(root, validate_formats=True)


def assert_valid(schema: Any, instance: Any, what: str) -> None:
    errors = [f"{e.instance_path}: {e.message}" for e in validator(schema).iter_errors(instance)]
    assert errors == [], f"{what} does not match the document: {errors}"


def component_schema(name: str) -> Json:
    found: Json = DOCUMENT["components"]["schemas"][name]
    return found


def code_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, implicit HEADs left out."""
    found = {(route.method, route.path) for route in routes() if isinstance(route, web.RouteDef)}
    app = web.Application()
    health_routes(app, {})
    for resource in app.router.resources():
        found.update((route.method, resource.canonical) for route in resource)
    return {(method, path) for method, path in found if method != "HEAD"}


# -- the document as a file --------------------------------------------------------------------


def test_the_safe_loader_loads_the_file_into_what_the_app_serves() -> None:
    loaded = load_yaml(SOURCE.read_bytes()).data
    assert loaded == DOCUMENT
    assert orjson.loads(cast(bytes, json_response(DOCUMENT).body)) == DOCUMENT


def test_the_yaml_is_plain() -> None:
    text = SOURCE.read_text(encoding="utf-8")
    tokens = list(yaml.scan(text, Loader=yaml.SafeLoader))
    assert not [t for t in tokens if isinstance(t, yaml.AnchorToken | yaml.AliasToken)]
    assert not [t for t in tokens if isinstance(t, yaml.TagToken)]
    assert not [
        t for t in tokens if isinstance(t, yaml.ScalarToken) and t.plain and t.value == "<<"
    ], "no merge keys"


def test_info_names_blobflow_at_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert DOCUMENT["openapi"] == "3.1.0"
    assert DOCUMENT["jsonSchemaDialect"] == DIALECT
    assert DOCUMENT["info"]["title"] == "blobflow"
    assert DOCUMENT["info"]["version"] == project["version"]
    assert DOCUMENT["info"]["license"]["identifier"] == project["license"]


# -- OpenAPI 3.1 structure ---------------------------------------------------------------------


def _unknown(fields: Mapping[str, Any], allowed: set[str]) -> set[str]:
    return {key for key in fields if key not in allowed and not key.startswith("x-")}


def test_the_top_level_objects_have_only_openapi_fields() -> None:
    assert _unknown(DOCUMENT, ROOT_FIELDS) == set()
    assert {"openapi", "info", "paths"} <= set(DOCUMENT)
    assert _unknown(DOCUMENT["info"], INFO_FIELDS) == set()
    assert isinstance(DOCUMENT["info"]["title"], str)
    assert isinstance(DOCUMENT["info"]["version"], str)
    assert _unknown(DOCUMENT["components"], COMPONENT_KINDS) == set()
    for kind, named in DOCUMENT["components"].items():
        for name in named:
            assert COMPONENT_NAME.fullmatch(name), f"components.{kind}: bad name {name!r}"
    tags = [tag["name"] for tag in DOCUMENT["tags"]]
    assert len(tags) == len(set(tags))


def test_every_reference_resolves_inside_the_document() -> None:
    refs = [
        (where, node["$ref"])
        for where, node in walk(DOCUMENT)
        if isinstance(node, dict) and "$ref" in node
    ]
    assert refs
    for where, ref in refs:
        assert isinstance(ref, str), where
        resolve(ref)


def test_every_component_is_used() -> None:
    used = {node["$ref"] for _, node in walk(DOCUMENT) if isinstance(node, dict) and "$ref" in node}
    for kind in ("schemas", "parameters", "headers", "responses"):
        for name in DOCUMENT["components"][kind]:
            assert f"#/components/{kind}/{name}" in used, f"components.{kind}.{name} is unused"


def test_path_templates_are_distinct_and_absolute() -> None:
    shapes = [TEMPLATE_PARAMETER.sub("{}", path) for path in DOCUMENT["paths"]]
    assert len(shapes) == len(set(shapes)), "two paths differ only in parameter names"
    for path, item in DOCUMENT["paths"].items():
        assert path.startswith("/"), path
        assert _unknown(item, PATH_ITEM_FIELDS) == set(), path


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in OPERATIONS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_each_operation_is_well_formed(path: str, method: str, operation: Json) -> None:
    assert _unknown(operation, OPERATION_FIELDS) == set()
    declared_tags = {tag["name"] for tag in DOCUMENT["tags"]}
    assert operation.get("tags"), "every operation is tagged"
    assert set(operation["tags"]) <= declared_tags
    schemes = DOCUMENT["components"]["securitySchemes"]
    for requirement in operation.get("security", []):
        assert set(requirement) <= set(schemes)

    seen = set()
    for parameter in parameters_of(path, method):
        assert _unknown(parameter, PARAMETER_FIELDS) == set()
        assert parameter["in"] in {"query", "header", "path", "cookie"}
        assert isinstance(parameter["name"], str)
        assert ("schema" in parameter) != ("content" in parameter)
        key = (parameter["name"], parameter["in"])
        assert key not in seen, f"parameter {key} declared twice"
        seen.add(key)

    if "requestBody" in operation:
        body = deref(operation["requestBody"])
        assert _unknown(body, REQUEST_BODY_FIELDS) == set()
        assert body["content"]
        for media_type, media in body["content"].items():
            assert MEDIA_TYPE.fullmatch(media_type), media_type
            assert _unknown(media, MEDIA_TYPE_FIELDS) == set()
            assert "schema" in media

    assert operation["responses"]
    for status, reference in operation["responses"].items():
        assert STATUS_KEY.fullmatch(status), f"response key {status!r}"
        if "$ref" in reference:
            assert _unknown(reference, REFERENCE_FIELDS) == set()
        response = deref(reference)
        assert _unknown(response, RESPONSE_FIELDS) == set()
        assert isinstance(response["description"], str), f"{status} needs a description"
        for name, header in response.get("headers", {}).items():
            header = deref(header)
            assert name.lower() != "content-type", "Content-Type is described by content"
            assert _unknown(header, HEADER_FIELDS) == set(), name
            assert "schema" in header, name
        for media_type, media in response.get("content", {}).items():
            assert MEDIA_TYPE.fullmatch(media_type), media_type
            assert _unknown(media, MEDIA_TYPE_FIELDS) == set()
            assert "schema" in media


def test_the_security_scheme_is_http_bearer() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes == {"bearerAuth": {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}}
    assert "security" not in DOCUMENT, "security is declared per operation"


@pytest.mark.parametrize(("where", "schema"), list(schema_objects()))
def test_every_schema_is_json_schema_2020_12(where: str, schema: Any) -> None:
    assert isinstance(schema, dict), where
    jsonschema_rs.meta.validate({"$schema": DIALECT, **schema})
    # 3.0 spellings that 2020-12 does not know, so they would silently mean nothing.
    for inner_where, node in walk(schema, where):
        if isinstance(node, dict):
            assert "nullable" not in node, f"{inner_where}: use type [..., 'null']"
            assert not isinstance(node.get("exclusiveMinimum"), bool), inner_where


# -- the document against the routes -----------------------------------------------------------


def test_the_document_has_exactly_the_routes_of_the_app() -> None:
    documented = {(method.upper(), path) for path, method, _ in OPERATIONS}
    served = code_routes()
    assert ("GET", "/healthz") in served
    assert ("GET", "/readyz") in served
    assert documented - served == set(), "documented but not served"
    assert served - documented == set(), "served but not documented"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_each_operation_is_named_and_answers(path: str, method: str, operation: Json) -> None:
    assert re.fullmatch(r"[a-z][A-Za-z]+", operation["operationId"])
    assert operation["summary"].strip()
    assert any(status.startswith("2") for status in operation["responses"])


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS, ids=OPERATION_IDS)
def test_authentication_and_rate_limits_are_documented_where_they_apply(
    path: str, method: str, operation: Json
) -> None:
    responses = operation["responses"]
    protected = path.startswith(PROTECTED_PREFIX)
    limited = path not in EXEMPT_PATHS
    assert ("401" in responses) == protected
    assert operation.get("security", []) == ([{"bearerAuth": []}] if protected else [])
    assert ("429" in responses) == limited
    if protected:
        assert "WWW-Authenticate" in deref(responses["401"])["headers"]
    if limited:
        assert "Retry-After" in deref(responses["429"])["headers"]
    for status, response in responses.items():
        headers = set(deref(response).get("headers", {}))
        rate = {"RateLimit-Limit", "RateLimit-Remaining"}
        assert (rate <= headers) == limited, f"{status}: RateLimit-* iff rate limited"


@pytest.mark.parametrize("path", list(DOCUMENT["paths"]))
def test_every_path_parameter_is_declared(path: str) -> None:
    in_template = set(TEMPLATE_PARAMETER.findall(path))
    for method in DOCUMENT["paths"][path]:
        if method not in METHODS:
            continue
        declared = [p for p in parameters_of(path, method) if p["in"] == "path"]
        assert {p["name"] for p in declared} == in_template
        assert all(p.get("required") is True for p in declared)


# -- parameters against the code ---------------------------------------------------------------


def test_the_filters_of_the_execution_list_are_the_code_s() -> None:
    names = {p["name"] for p in parameters_of("/v1/executions", "get") if p["in"] == "query"}
    assert names == {*LIST_FILTERS, "limit", "offset"}


@pytest.mark.parametrize(
    ("path", "name", "choices"),
    [
        ("/v1/executions", "status", execution_routes.STATUSES),
        ("/v1/executions/{id}/logs", "level", log_routes.LEVELS),
        ("/v1/executions/{id}/logs/download", "format", log_routes.FORMATS),
    ],
)
def test_choices_are_the_code_s(path: str, name: str, choices: frozenset[str]) -> None:
    schema = deref(query_parameter(path, name)["schema"])
    assert set(schema["enum"]) == choices


@pytest.mark.parametrize(
    ("schema", "literal"),
    [
        ("ExecutionStatus", ExecutionStatus),
        ("StepStatus", StepStatus),
        ("LogLevel", LogLevel),
        ("DefinitionKind", Kind),
    ],
)
def test_enums_are_the_records_literals(schema: str, literal: Any) -> None:
    assert set(component_schema(schema)["enum"]) == set(get_args(literal))


def test_step_kinds_are_the_records() -> None:
    kinds = get_args(get_type_hints(StepRecord)["kind"])
    assert set(component_schema("StepRecord")["properties"]["kind"]["enum"]) == set(kinds)


def test_the_execute_body_takes_the_code_s_fields() -> None:
    schema = component_schema("ExecuteRequest")
    assert set(schema["properties"]) == execution_routes.EXECUTE_FIELDS
    assert schema["additionalProperties"] is False


def test_registration_takes_the_code_s_content_types() -> None:
    content = DOCUMENT["paths"]["/v1/registry"]["post"]["requestBody"]["content"]
    assert set(content) == definition_routes.BUNDLE_TYPES


# -- the handlers against the document ---------------------------------------------------------

NOW = datetime(2026, 11, 23, 12, 0, 0, 123000, tzinfo=UTC)
ADMIN, ALICE, BOB = "admin-token", "alice-token", "bob-token"
TOKENS = [
    ApiToken(token=ADMIN, user_id="root", admin=True),
    ApiToken(token=ALICE, user_id="alice"),
    ApiToken(token=BOB, user_id="bob"),
]


def _catalog() -> Catalog:
    documents, problems = read_paths([ROOT])
    assert problems == []
    return build_catalog(documents)


CATALOG = _catalog()
FAILED = Execution(
    id="ex-1",
    event_id="evt-1",
    provider_id="memmie-studio",
    workflow_id="blob_processing_workflow",
    workflow_version=2,
    blob_id="blob-1",
    user_id="alice",
    priority=10,
    input={"blob_id": "blob-1", "user_id": "alice", "content": ["any", {"json": None}]},
    steps=(
        StepRecord(
            id="validate_blob",
            status="completed",
            attempts=1,
            started_at=NOW,
            completed_at=NOW,
            duration_ms=12,
            request={"method": "POST", "path": "/blobs/validate", "body": '{"blob_id":"blob-1"}'},
            output={"valid": True},
            http_status=200,
        ),
        StepRecord(id="extract_metadata", status="skipped"),
        StepRecord(
            id="trigger_providers",
            status="failed",
            attempts=2,
            started_at=NOW,
            completed_at=NOW,
            duration_ms=2000,
            output=[1, "two"],
            http_status=503,
            error="HTTP 503",
        ),
        StepRecord(id="generate_deltas", status="cancelled"),
        StepRecord(id="validate_blob", kind="compensation", status="completed", attempts=1),
    ),
    status="failed",
    output=None,
    error="step trigger_providers failed: HTTP 503",
    created_at=NOW,
    started_at=NOW,
    completed_at=NOW,
    decisions=(Decision("extract_metadata", "$.steps.validate_blob.output.valid == true", False),),
)
RUNNING = replace(
    FAILED, id="ex-live", status="running", output=None, error=None, completed_at=None
)
SLOW = replace(RUNNING, id="ex-slow")
COMPLETED = replace(FAILED, id="ex-done", status="completed", output="done", error=None)
# Started earlier by `Idempotency-Key: repeat-1` from root.
REPEATED = replace(COMPLETED, id=idempotent_id("root", "repeat-1"))
EXECUTIONS = {e.id: e for e in (FAILED, RUNNING, SLOW, COMPLETED, REPEATED)}
CANCELS = {
    "ex-live": CancelResult("cancelled", replace(RUNNING, status="cancelled", cancelled_at=NOW)),
    "ex-slow": CancelResult("requested", replace(SLOW, cancel_requested=True)),
    "ex-done": CancelResult("finished", COMPLETED),
}
LOG_DOCUMENTS = [
    log_document(LogLine(NOW, "info", None, "started")),
    log_document(LogLine(NOW, "debug", "validate_blob", "POST studio/blobs/validate")),
    log_document(LogLine(NOW, "error", "trigger_providers", "HTTP 503\nretrying")),
]
DELTA = {
    **delta_document(FAILED, 0, DeltaDraft("transform", "/content", {"a": 1}, None)),
    "version": 1,
}


def _stored_summary(execution: Execution) -> Json:
    """What the listing's projection reads from MongoDB."""
    stored = {**to_document(execution), "lease": {"owner": "w", "epoch": 1}, "logs": []}
    return {key: value for key, value in stored.items() if key in (*SUMMARY_FIELDS, "_id")}


# An id that makes the stand-ins fail as the store does when MongoDB is not answering.
DOWN = "db-down"
# A user with as many runs waiting as one may have.
BUSY_USER = "busy"
# A manual run of this blob finds the replica stopping.
STOPPING = "stopping-blob"


def _down_if(value: object) -> None:
    if value == DOWN:
        raise StoreUnavailable("AutoReconnect: 127.0.0.1:27017: connection refused")


class FakeStore:
    async def get(self, execution_id: str) -> Execution | None:
        _down_if(execution_id)
        return EXECUTIONS.get(execution_id)


class FakeQueries:
    async def executions_page(self, filters: Mapping[str, str], *, limit: int, offset: int) -> Page:
        _down_if(filters.get("workflow_id"))
        items = [_stored_summary(e) for e in EXECUTIONS.values()][offset : offset + limit]
        return Page(items, len(EXECUTIONS))

    async def execution_logs(self, execution_id: str) -> ExecutionLogs | None:
        _down_if(execution_id)
        found = EXECUTIONS.get(execution_id)
        if found is None:
            return None
        return ExecutionLogs(found.workflow_id, found.user_id, LOG_DOCUMENTS)

    async def blob_deltas(
        self, blob_id: str, *, user_id: str | None, limit: int, offset: int
    ) -> Page:
        _down_if(blob_id)
        return Page([DELTA], 1) if blob_id == DELTA["blob_id"] else Page([], 0)

    async def claim_blob(self, blob_id: str, user_id: str) -> bool:
        _down_if(blob_id)
        return True

    async def pending_manual_runs(self, user_id: str) -> int:
        return MAX_PENDING_MANUAL_RUNS if user_id == BUSY_USER else 0


def _bundle_of(schema_id: str) -> bytes:
    schema = {
        "id": schema_id,
        "provider_id": "p",
        "name": "A schema",
        "type": "input",
        "definition": {"type": "object"},
    }
    return orjson.dumps({"schemas": [schema]})


def _input_of(blob_id: str) -> bytes:
    return orjson.dumps({"input": {"blob_id": blob_id, "user_id": "u"}})


CONFLICTED = "contested_schema"
CONFLICTING = _bundle_of(CONFLICTED)


class FakeDefinitions:
    async def versions(self, kind: Kind, item_id: str) -> list[Json]:
        _down_if(item_id)
        content_hash = CATALOG.hashes.get((kind, item_id))
        if content_hash is None:
            return []
        return [
            {"version": 2, "hash": content_hash, "registered_at": NOW},
            {"version": 1, "hash": "0" * 64},
        ]

    async def document(self, kind: Kind, item_id: str, version: int) -> Json | None:
        return {"id": item_id}

    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]:
        for document in documents:
            _down_if(document.item_id)
        if any(d.item_id == CONFLICTED for d in documents):
            raise RegistrationConflict("registration conflicted 5 times; try again")
        return [ItemResult(d.kind, d.item_id or "", 1, True) for d in documents]


class FakeCanceller:
    async def cancel(self, execution_id: str, *, token: str | None = None) -> CancelResult:
        return CANCELS[execution_id]


class FakeSubmitter:
    async def submit(self, execution: Execution) -> bool:
        _down_if(execution.blob_id)
        if execution.blob_id == STOPPING:
            raise ServiceStopping("this replica is stopping; send the run to another")
        return True


class FakePayload:
    """A request body, as aiohttp's StreamReader hands it to `Request.read`."""

    def __init__(self, body: bytes) -> None:
        self.chunks = [body, b""] if body else [b""]

    def set_read_chunk_size(self, size: int) -> None:
        pass

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def _announce() -> None:
    pass


def _probe(ready: bool) -> Probe:
    async def probe() -> bool:
        return ready

    return probe


def _app(*, ready: bool = True, burst: int = 1000) -> tuple[web.Application, Access]:
    context = ApiContext(
        store=cast(Any, FakeStore()),
        queries=cast(Any, FakeQueries()),
        definitions=cast(Any, FakeDefinitions()),
        catalog=lambda: CATALOG,
        submitter=cast(Any, FakeSubmitter()),
        canceller=cast(Any, FakeCanceller()),
        metrics=Metrics(),
        announce=_announce,
    )
    access = Access(TOKENS, RateLimiter(rate_per_s=1e-6, burst=burst))
    probes = {"nats": _probe(True), "mongodb": _probe(ready)}
    app = api_app(context, access, probes)
    app.freeze()
    return app, access


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    content_type: str
    body: bytes


async def _call(
    method: str,
    url: str,
    *,
    token: str | None = ADMIN,
    body: bytes = b"",
    content_type: str | None = None,
    ready: bool = True,
    times: int = 1,
    idempotency_key: str | None = None,
) -> tuple[str, Answer]:
    """The route template `url` resolves to, and the answer of its handler, middlewares included.

    `times` > 1 calls it again with a bucket of one request, for the rate limit's answer.
    """
    app, access = _app(ready=ready, burst=1 if times > 1 else 1000)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    match = await app.router.resolve(make_mocked_request(method, url, headers, app=app))
    assert match.http_exception is None, f"{method} {url} does not resolve"
    resource = match.route.resource
    assert resource is not None
    handler = match.handler

    async def limited(request: web.Request) -> web.StreamResponse:
        return await access.middleware(request, handler)

    for _ in range(times):
        writer = mock.Mock()
        writer.write_headers = mock.AsyncMock()
        writer.write = mock.AsyncMock()
        writer.write_eof = mock.AsyncMock()
        writer.drain = mock.AsyncMock()
        request = make_mocked_request(
            method,
            url,
            headers,
            match_info=dict(match),
            app=app,
            writer=writer,
            payload=cast(Any, FakePayload(body)),
            client_max_size=MAX_BODY_BYTES,
        )
        response = await errors_as_json(request, limited)
        if not response.prepared:
            await response.prepare(request)  # runs on_response_prepare: the RateLimit-* headers
    if isinstance(response, web.Response):
        sent = cast(bytes, response.body or b"")
    else:
        sent = b"".join(call.args[0] for call in writer.write.call_args_list)
    answer = Answer(response.status, dict(response.headers), response.content_type, sent)
    return resource.canonical, answer


def _check_against_document(method: str, template: str, answer: Answer) -> None:
    """The answer is one the document gives this operation, headers and body included."""
    response = response_of(template, method.lower(), answer.status)
    for name, header in response.get("headers", {}).items():
        assert name in answer.headers, f"{answer.status}: header {name} is missing"
        schema = deref(header)["schema"]
        value: Any = answer.headers[name]
        if schema.get("type") == "integer":
            assert re.fullmatch(r"[0-9]+", value), f"{name}: {value!r} is not an integer"
            value = int(value)
        assert_valid(schema, value, f"header {name}")
    content = response.get("content", {})
    assert answer.content_type in content, (
        f"{answer.status}: {answer.content_type} is not documented"
    )
    schema = content[answer.content_type]["schema"]
    if answer.content_type == "application/json":
        assert_valid(schema, orjson.loads(answer.body), f"{method} {template} {answer.status}")
    else:
        assert_valid(schema, answer.body.decode("utf-8"), f"{method} {template} {answer.status}")


OVERSIZED = b" " * (MAX_BODY_BYTES + 1)
EXECUTE = "/v1/workflows/blob_processing_workflow/execute"
GOOD_INPUT = orjson.dumps({"input": {"blob_id": "blob-1", "user_id": "root"}})
BUNDLE = {
    "schemas": [],
    "workflows": [
        {
            "id": "wf-new",
            "provider_id": "memmie-studio",
            "name": "New",
            "steps": [{"id": "a", "service": "studio", "endpoint": "/a"}],
        }
    ],
}
YAML_BUNDLE = b"""\
workflows:
  - id: wf-new
    provider_id: memmie-studio
    name: New
    steps:
      - {id: a, service: studio, endpoint: /a}
"""
JSON = "application/json"

# (method, url, options, status): every status the handlers give, each with its cause.
SCENARIOS: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/healthz", {"token": None}, 200),
    ("GET", "/readyz", {"token": None}, 200),
    ("GET", "/readyz", {"token": None, "ready": False}, 503),
    ("GET", "/metrics", {"token": None}, 200),
    ("GET", "/openapi.json", {"token": None}, 200),
    ("GET", "/openapi.json", {"token": None, "times": 2}, 429),
    ("GET", "/v1/executions", {}, 200),
    ("GET", "/v1/executions?status=failed&workflow_id=w&limit=100&offset=0", {}, 200),
    ("GET", "/v1/executions?user_id=root", {"token": ALICE}, 200),
    ("GET", "/v1/executions?limit=101", {}, 400),
    ("GET", "/v1/executions?limit=%2B5", {}, 400),
    ("GET", "/v1/executions?offset=-1", {}, 400),
    ("GET", "/v1/executions?status=done", {}, 400),
    ("GET", "/v1/executions?blob_id=", {}, 400),
    ("GET", "/v1/executions?user_id=a&user_id=b", {}, 400),
    ("GET", "/v1/executions", {"token": None}, 401),
    ("GET", "/v1/executions", {"token": "wrong"}, 401),
    ("GET", "/v1/executions", {"times": 2}, 429),
    ("GET", "/v1/executions/ex-1", {}, 200),
    ("GET", "/v1/executions/ex-1", {"token": ALICE}, 200),
    ("GET", "/v1/executions/ex-1", {"token": BOB}, 404),
    ("GET", "/v1/executions/nope", {}, 404),
    ("GET", "/v1/executions/ex-1", {"token": None}, 401),
    ("GET", "/v1/executions/ex-1", {"times": 2}, 429),
    ("POST", "/v1/executions/ex-live/cancel", {}, 200),
    ("POST", "/v1/executions/ex-slow/cancel", {}, 202),
    ("POST", "/v1/executions/ex-done/cancel", {}, 409),
    ("POST", "/v1/executions/nope/cancel", {}, 404),
    ("POST", "/v1/executions/ex-live/cancel", {"token": BOB}, 404),
    ("POST", "/v1/executions/ex-live/cancel", {"token": None}, 401),
    ("POST", "/v1/executions/ex-live/cancel", {"times": 2}, 429),
    ("POST", EXECUTE, {"body": GOOD_INPUT, "content_type": JSON}, 202),
    (
        "POST",
        EXECUTE,
        {"body": b'{"input": {"blob_id": "b", "user_id": "busy"}}', "content_type": JSON},
        429,
    ),
    ("POST", EXECUTE, {"body": GOOD_INPUT, "content_type": JSON, "idempotency_key": "k"}, 202),
    (
        "POST",
        EXECUTE,
        {"body": GOOD_INPUT, "content_type": JSON, "idempotency_key": "repeat-1"},
        200,
    ),
    (
        "POST",
        EXECUTE,
        {"body": GOOD_INPUT, "content_type": JSON, "idempotency_key": "k" * 201},
        400,
    ),
    ("POST", EXECUTE, {"body": GOOD_INPUT, "content_type": f"{JSON}; charset=utf-8"}, 202),
    ("POST", EXECUTE, {"body": GOOD_INPUT, "content_type": "text/plain"}, 415),
    ("POST", EXECUTE, {"body": GOOD_INPUT}, 415),
    ("POST", EXECUTE, {"body": b"{", "content_type": JSON}, 400),
    ("POST", EXECUTE, {"body": b"[]", "content_type": JSON}, 400),
    ("POST", EXECUTE, {"body": b'{"input": {"blob_id": "b"}, "x": 1}', "content_type": JSON}, 400),
    ("POST", EXECUTE, {"body": b'{"input": "blob-1"}', "content_type": JSON}, 400),
    ("POST", EXECUTE, {"body": b'{"input": {"user_id": "root"}}', "content_type": JSON}, 400),
    (
        "POST",
        EXECUTE,
        {"body": b'{"input": {"blob_id": "b", "provider_ids": 1}}', "content_type": JSON},
        400,
    ),
    ("POST", EXECUTE, {"body": OVERSIZED, "content_type": JSON}, 413),
    ("POST", "/v1/workflows/nope/execute", {"body": GOOD_INPUT, "content_type": JSON}, 404),
    ("POST", EXECUTE, {"token": None}, 401),
    ("POST", EXECUTE, {"times": 2}, 429),
    ("GET", "/v1/executions/ex-1/logs", {}, 200),
    ("GET", "/v1/executions/ex-1/logs?level=error&step_id=trigger_providers", {}, 200),
    ("GET", "/v1/executions/ex-1/logs?limit=10000&offset=2", {"token": ALICE}, 200),
    ("GET", "/v1/executions/ex-1/logs?level=fatal", {}, 400),
    ("GET", "/v1/executions/ex-1/logs?limit=10001", {}, 400),
    ("GET", "/v1/executions/ex-1/logs", {"token": BOB}, 404),
    ("GET", "/v1/executions/ex-1/logs", {"token": None}, 401),
    ("GET", "/v1/executions/ex-1/logs", {"times": 2}, 429),
    ("GET", "/v1/executions/ex-1/logs/download", {}, 200),
    ("GET", "/v1/executions/ex-1/logs/download?format=text", {}, 200),
    ("GET", "/v1/executions/ex-1/logs/download?format=json", {}, 200),
    ("GET", "/v1/executions/ex-1/logs/download?format=csv", {}, 400),
    ("GET", "/v1/executions/nope/logs/download", {}, 404),
    ("GET", "/v1/executions/ex-1/logs/download", {"token": None}, 401),
    ("GET", "/v1/executions/ex-1/logs/download", {"times": 2}, 429),
    *[
        scenario
        for segment, item_id in (
            ("workflows", "blob_processing_workflow"),
            ("providers", "book-writer"),
            ("schemas", "blob_input_schema_v1"),
        )
        for scenario in (
            ("GET", f"/v1/{segment}", {"token": ALICE}, 200),
            ("GET", f"/v1/{segment}", {"token": None}, 401),
            ("GET", f"/v1/{segment}", {"times": 2}, 429),
            ("GET", f"/v1/{segment}/{item_id}", {"token": ALICE}, 200),
            ("GET", f"/v1/{segment}/nope", {}, 404),
            ("GET", f"/v1/{segment}/{item_id}", {"token": None}, 401),
            ("GET", f"/v1/{segment}/{item_id}", {"times": 2}, 429),
        )
    ],
    ("POST", "/v1/registry", {"body": orjson.dumps(BUNDLE), "content_type": JSON}, 200),
    ("POST", "/v1/registry", {"body": b"{}", "content_type": JSON}, 200),
    ("POST", "/v1/registry", {"body": YAML_BUNDLE, "content_type": "application/yaml"}, 200),
    ("POST", "/v1/registry", {"body": YAML_BUNDLE, "content_type": "text/x-yaml"}, 200),
    ("POST", "/v1/registry", {"body": b'{"flows": []}', "content_type": JSON}, 400),
    ("POST", "/v1/registry", {"body": b"{", "content_type": JSON}, 400),
    ("POST", "/v1/registry", {"body": b'{"workflows": [1, 2]}', "content_type": JSON}, 400),
    ("POST", "/v1/registry", {"body": b"a: [", "content_type": "application/yaml"}, 400),
    ("POST", "/v1/registry", {"body": b"{}", "content_type": JSON, "token": ALICE}, 403),
    ("POST", "/v1/registry", {"body": b"{}", "content_type": "text/plain"}, 415),
    ("POST", "/v1/registry", {"body": OVERSIZED, "content_type": JSON}, 413),
    ("POST", "/v1/registry", {"body": CONFLICTING, "content_type": JSON}, 503),
    ("POST", "/v1/registry", {"body": _bundle_of(DOWN), "content_type": JSON}, 503),
    ("GET", f"/v1/executions?workflow_id={DOWN}", {}, 503),
    ("GET", f"/v1/executions/{DOWN}", {}, 503),
    ("POST", f"/v1/executions/{DOWN}/cancel", {}, 503),
    ("GET", f"/v1/executions/{DOWN}/logs", {}, 503),
    ("GET", f"/v1/executions/{DOWN}/logs/download", {}, 503),
    ("GET", f"/v1/workflows/{DOWN}", {}, 503),
    ("GET", f"/v1/providers/{DOWN}", {}, 503),
    ("GET", f"/v1/schemas/{DOWN}", {}, 503),
    ("GET", f"/v1/blobs/{DOWN}/deltas", {}, 503),
    ("POST", EXECUTE, {"body": _input_of(DOWN), "content_type": JSON}, 503),
    ("POST", EXECUTE, {"body": _input_of(STOPPING), "content_type": JSON}, 503),
    ("POST", "/v1/registry", {"token": None}, 401),
    ("POST", "/v1/registry", {"times": 2}, 429),
    ("GET", "/v1/blobs/blob-1/deltas", {}, 200),
    ("GET", "/v1/blobs/blob-1/deltas?limit=1000&offset=5", {"token": ALICE}, 200),
    ("GET", "/v1/blobs/blob-1/deltas?limit=1001", {}, 400),
    ("GET", "/v1/blobs/blob-1/deltas?offset=x", {}, 400),
    ("GET", "/v1/blobs/nope/deltas", {}, 404),
    ("GET", "/v1/blobs/blob-1/deltas", {"token": None}, 401),
    ("GET", "/v1/blobs/blob-1/deltas", {"times": 2}, 429),
]


def _scenario_id(scenario: tuple[str, str, dict[str, Any], int]) -> str:
    method, url, options, status = scenario
    shown = {k: v if k != "body" else f"{len(v)} bytes" for k, v in options.items()}
    return f"{status} {method} {url} {shown}" if shown else f"{status} {method} {url}"


@pytest.mark.parametrize(
    ("method", "url", "options", "status"), SCENARIOS, ids=[_scenario_id(s) for s in SCENARIOS]
)
@pytest.mark.asyncio
async def test_every_answer_is_documented(
    method: str, url: str, options: dict[str, Any], status: int
) -> None:
    template, answer = await _call(method, url, **options)
    assert answer.status == status, answer.body[:300]
    _check_against_document(method, template, answer)


def test_every_documented_status_is_given_by_a_scenario() -> None:
    """So none of them is documented by guesswork (the scenarios run as above)."""
    covered: set[tuple[str, str, str]] = set()
    for scenario_method, url, _, status in SCENARIOS:
        covered.update(
            (path, method, str(status))
            for path, method, _ in OPERATIONS
            if method == scenario_method.lower()
            and re.fullmatch(TEMPLATE_PARAMETER.sub("[^/]+", path), url.partition("?")[0])
        )
    documented = {
        (path, method, status)
        for path, method, operation in OPERATIONS
        for status in operation["responses"]
    }
    assert documented - covered == set()


@pytest.mark.parametrize(
    ("path", "url", "name", "minimum", "maximum", "default"),
    [
        ("/v1/executions", "/v1/executions", "limit", 1, 100, 50),
        ("/v1/executions", "/v1/executions", "offset", 0, None, 0),
        ("/v1/executions/{id}/logs", "/v1/executions/ex-1/logs", "limit", 1, 10_000, 1000),
        ("/v1/executions/{id}/logs", "/v1/executions/ex-1/logs", "offset", 0, None, 0),
        ("/v1/blobs/{blob_id}/deltas", "/v1/blobs/blob-1/deltas", "limit", 1, 1000, 100),
        ("/v1/blobs/{blob_id}/deltas", "/v1/blobs/blob-1/deltas", "offset", 0, None, 0),
    ],
)
@pytest.mark.asyncio
async def test_paging_bounds_and_defaults_are_the_handlers(
    path: str, url: str, name: str, minimum: int, maximum: int | None, default: int
) -> None:
    schema = query_parameter(path, name)["schema"]
    assert schema["type"] == "integer"
    assert schema["minimum"] == minimum
    assert schema.get("maximum") == maximum
    assert schema["default"] == default

    _, answer = await _call("GET", url)
    assert orjson.loads(answer.body)[name] == default
    refused = [minimum - 1] + ([maximum + 1] if maximum is not None else [])
    accepted = [minimum] + ([maximum] if maximum is not None else [])
    for value in refused + accepted:
        _, answer = await _call("GET", f"{url}?{name}={value}")
        assert answer.status == (400 if value in refused else 200), f"{name}={value}"


@pytest.mark.asyncio
async def test_a_started_execution_is_located_and_pending() -> None:
    _, answer = await _call("POST", EXECUTE, body=GOOD_INPUT, content_type=JSON)
    body = orjson.loads(answer.body)
    assert answer.status == 202
    assert answer.headers["Location"] == f"/v1/executions/{body['execution_id']}"
    assert body["status"] == "pending"


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [(None, "text/plain", "txt"), ("text", "text/plain", "txt"), ("json", JSON, "json")],
)
@pytest.mark.asyncio
async def test_a_download_is_an_attachment_of_its_format(
    fmt: str | None, content_type: str, extension: str
) -> None:
    query = "" if fmt is None else f"?format={fmt}"
    _, answer = await _call("GET", f"/v1/executions/ex-1/logs/download{query}")
    assert answer.content_type == content_type
    disposition = answer.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="execution-ex-1-logs.{extension}"'
    text = answer.body.decode()
    if fmt == "json":
        assert orjson.loads(text)["total_logs"] == len(LOG_DOCUMENTS)
    else:
        assert len(text.splitlines()) == len(LOG_DOCUMENTS)


# -- the views against the schemas -------------------------------------------------------------
#
# The handlers' bodies are checked above; these check that a schema names exactly the fields
# its view gives, no more (a documented field the code never sends) and no fewer.


async def _body(method: str, url: str, status: int = 200, **options: Any) -> Any:
    _, answer = await _call(method, url, **options)
    assert answer.status == status
    return orjson.loads(answer.body)


REGISTER = {"body": orjson.dumps(BUNDLE), "content_type": JSON}
REFUSED = {"body": b'{"flows": []}', "content_type": JSON}
INVALID_INPUT = {"body": b'{"input": {"blob_id": "b", "provider_ids": 1}}', "content_type": JSON}


@pytest.mark.parametrize(
    ("method", "url", "status", "options", "pick", "schema"),
    [
        ("GET", "/v1/executions/ex-1", 200, {}, lambda body: body, "Execution"),
        ("GET", "/v1/executions/ex-1", 200, {}, lambda body: body["steps"][0], "StepRecord"),
        ("GET", "/v1/executions/ex-1", 200, {}, lambda body: body["decisions"][0], "Decision"),
        ("GET", "/v1/executions/ex-1", 200, {}, lambda body: body["progress"], "Progress"),
        ("GET", "/v1/executions", 200, {}, lambda body: body, "ExecutionPage"),
        (
            "GET",
            "/v1/executions",
            200,
            {},
            lambda body: body["executions"][0],
            "ExecutionSummary",
        ),
        ("POST", EXECUTE, 202, {"body": GOOD_INPUT, "content_type": JSON}, None, "ExecuteAccepted"),
        ("GET", "/v1/executions/ex-1/logs", 200, {}, lambda body: body, "LogPage"),
        ("GET", "/v1/executions/ex-1/logs", 200, {}, lambda body: body["logs"][0], "LogLine"),
        ("GET", "/v1/executions/ex-1/logs/download?format=json", 200, {}, None, "LogDownload"),
        ("GET", "/v1/blobs/blob-1/deltas", 200, {}, lambda body: body, "DeltaPage"),
        ("GET", "/v1/blobs/blob-1/deltas", 200, {}, lambda body: body["deltas"][0], "Delta"),
        ("GET", "/v1/workflows", 200, {}, lambda body: body, "WorkflowList"),
        ("GET", "/v1/workflows", 200, {}, lambda body: body["items"][0], "WorkflowSummary"),
        ("GET", "/v1/providers", 200, {}, lambda body: body["items"][0], "ProviderSummary"),
        ("GET", "/v1/schemas", 200, {}, lambda body: body["items"][0], "SchemaSummary"),
        ("GET", "/v1/schemas/blob_input_schema_v1", 200, {}, None, "DefinitionDetail"),
        (
            "GET",
            "/v1/schemas/blob_input_schema_v1",
            200,
            {},
            lambda body: body["versions"][0],
            "DefinitionVersion",
        ),
        ("POST", "/v1/registry", 200, REGISTER, None, "RegistrationSuccess"),
        ("POST", "/v1/registry", 200, REGISTER, lambda b: b["results"][0], "RegistrationResult"),
        ("POST", "/v1/registry", 400, REFUSED, None, "RegistrationFailure"),
        ("POST", "/v1/registry", 400, REFUSED, lambda b: b["errors"][0], "RegistrationProblem"),
        ("POST", EXECUTE, 400, INVALID_INPUT, None, "Error"),
        ("POST", EXECUTE, 400, INVALID_INPUT, lambda body: body["error"], "ErrorDetail"),
        ("GET", "/healthz", 200, {}, None, "Health"),
        ("GET", "/readyz", 200, {}, None, "Readiness"),
    ],
)
@pytest.mark.asyncio
async def test_a_schema_names_exactly_the_fields_of_its_view(
    method: str,
    url: str,
    status: int,
    options: dict[str, Any],
    pick: Callable[[Any], Any] | None,
    schema: str,
) -> None:
    body = await _body(method, url, status, **options)
    shown = body if pick is None else pick(body)
    documented = component_schema(schema)
    # The optional fields: `details` on errors that carry some, `retryable` on a
    # registration that may succeed if sent again.
    optional = {"details", "retryable"}
    assert set(documented["properties"]) - optional <= set(shown) <= set(documented["properties"])
    assert set(documented["required"]) == set(shown) - optional
