"""Execution routes: list, read, cancel, and start a workflow by hand."""

from __future__ import annotations

from typing import Any, get_args

from aiohttp import web

from blobflow.api.access import caller_token, principal
from blobflow.api.context import context
from blobflow.api.params import choice_param, int_param, text_param
from blobflow.api.responses import json_response, read_json_object
from blobflow.api.views import execution_view, summary_view
from blobflow.core.catalog import Catalog
from blobflow.core.listings import LIST_FILTERS
from blobflow.core.records import Execution, ExecutionStatus
from blobflow.errors import ApiError, ServiceStopping, UnstorableError, bad_parameter, not_found
from blobflow.runtime.submission import idempotent_id, manual_execution

STATUSES = frozenset(get_args(ExecutionStatus))
EXECUTE_FIELDS = frozenset({"input", "provider_id"})
ANONYMOUS_USER = "anonymous"
MAX_IDEMPOTENCY_KEY_CHARS = 200
MAX_PENDING_MANUAL_RUNS = 1_000


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/executions", list_executions),
        web.get("/v1/executions/{id}", get_execution),
        web.post("/v1/executions/{id}/cancel", cancel_execution),
        web.post("/v1/workflows/{id}/execute", execute_workflow),
    ]


async def list_executions(request: web.Request) -> web.Response:
    limit = int_param(request, "limit", default=50, minimum=1, maximum=100)
    offset = int_param(request, "offset", default=0, minimum=0)
    filters = {name: text_param(request, name) for name in LIST_FILTERS if name != "status"}
    filters["status"] = choice_param(request, "status", STATUSES)
    given = {name: value for name, value in filters.items() if value is not None}
    caller = principal(request)
    if not caller.admin:
        if given.get("user_id", caller.user_id) != caller.user_id:
            body = {"executions": [], "total": 0, "limit": limit, "offset": offset}
            return json_response(body)
        given["user_id"] = caller.user_id or ""
    page = await context(request).queries.executions_page(given, limit=limit, offset=offset)
    executions = [summary_view(document) for document in page.items]
    body = {"executions": executions, "total": page.total, "limit": limit, "offset": offset}
    return json_response(body)


async def get_execution(request: web.Request) -> web.Response:
    return json_response(execution_view(await visible_execution(request)))


async def cancel_execution(request: web.Request) -> web.Response:
    execution = await visible_execution(request)
    # The replica running it checks the caller's token again (it trusts no other replica).
    result = await context(request).canceller.cancel(execution.id, token=caller_token(request))
    if result.execution is None:
        raise not_found(f"execution {execution.id!r}")
    if result.outcome == "finished":
        raise ApiError(
            409, "already_finished", f"execution {execution.id!r} is {result.execution.status}"
        )
    # 202: recorded, and its owner or the next worker to take it over cancels it.
    status = 200 if result.outcome == "cancelled" else 202
    return json_response(execution_view(result.execution), status)


async def execute_workflow(request: web.Request) -> web.Response:
    ctx = context(request)
    catalog = ctx.catalog()
    workflow_id = request.match_info["id"]
    workflow = catalog.workflows.get(workflow_id)
    if workflow is None:
        raise not_found(f"workflow {workflow_id!r}")
    body = await read_json_object(request)
    unknown = sorted(set(body) - EXECUTE_FIELDS)
    if unknown:
        raise bad_parameter(unknown[0], "unknown field; the body takes input and provider_id")
    data = body.get("input")
    if not isinstance(data, dict):
        raise bad_parameter("input", "required, a JSON object")
    provider_id = body.get("provider_id", workflow.spec.provider_id)
    defaults, priority = _binding(catalog, provider_id, workflow_id, explicit="provider_id" in body)
    data = {**defaults, **data}
    blob_id = data.get("blob_id")
    if not isinstance(blob_id, str) or not blob_id:
        raise bad_parameter("input.blob_id", "required, the id of the blob the run is about")
    user_id = _user_id(request, data)
    key = _idempotency_key(request)
    if key is not None:
        earlier = await _earlier_run(request, user_id, key)
        if earlier is not None:
            return earlier
    caller = principal(request)
    if not caller.admin and not await ctx.queries.claim_blob(blob_id, user_id):
        # Deltas of this run would land in someone else's history.
        raise not_found(f"blob {blob_id!r}")
    if await ctx.queries.pending_manual_runs(user_id) >= MAX_PENDING_MANUAL_RUNS:
        # What waits is stored in MongoDB: one user must not fill it for everyone.
        raise ApiError(
            429,
            "too_many_pending_runs",
            f"{MAX_PENDING_MANUAL_RUNS} runs started by hand for {user_id!r} are still "
            "waiting to start; send more once they have",
            headers={"Retry-After": "10"},
        )
    # The same shape as an event's input, which always names its user.
    data.setdefault("user_id", user_id)
    validator = catalog.validators.get(workflow.spec.input_schema_id or "")
    problems = validator.violations(data) if validator is not None else []
    if problems:
        raise ApiError(
            400,
            "invalid_input",
            f"input does not match schema {workflow.spec.input_schema_id!r}",
            details=[str(problem) for problem in problems],
        )
    execution = manual_execution(
        workflow,
        catalog.version("workflow", workflow_id),
        provider_id=provider_id,
        blob_id=blob_id,
        user_id=user_id,
        input=data,
        priority=priority,
        idempotency_key=key,
    )
    try:
        new = await ctx.submitter.submit(execution)
    except UnstorableError as exc:
        raise ApiError(400, "invalid_input", f"the input cannot be stored: {exc}") from None
    except ServiceStopping as exc:
        raise ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"}) from None
    if not new and key is not None:
        # The same key sent twice at once: the other request stored it first.
        earlier = await _earlier_run(request, user_id, key)
        if earlier is not None:
            return earlier
    return _run_response(execution, 202)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise bad_parameter(
            "Idempotency-Key", f"1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, if given"
        )
    return key


async def _earlier_run(request: web.Request, user_id: str, key: str) -> web.Response | None:
    """200 with the run this key from this user started before, if it did."""
    earlier = await context(request).store.get(idempotent_id(user_id, key))
    return None if earlier is None else _run_response(earlier, 200)


def _run_response(execution: Execution, status: int) -> web.Response:
    location = f"/v1/executions/{execution.id}"
    body = {"execution_id": execution.id, "status": execution.status}
    return json_response(body, status, headers={"Location": location})


async def visible_execution(request: web.Request) -> Execution:
    """The execution of the path, if the caller may see it; 404 otherwise."""
    execution_id = request.match_info["id"]
    execution = await context(request).store.get(execution_id)
    if execution is None or not principal(request).sees(execution.user_id):
        raise not_found(f"execution {execution_id!r}")
    return execution


def _binding(
    catalog: Catalog, provider_id: Any, workflow_id: str, *, explicit: bool
) -> tuple[dict[str, Any], int]:
    """The binding's input defaults and priority; none when the workflow's own provider."""
    if not isinstance(provider_id, str) or not provider_id:
        raise bad_parameter("provider_id", "must be a non-empty string")
    for binding in catalog.bindings:
        if binding.provider_id == provider_id and binding.workflow_id == workflow_id:
            return dict(binding.input), binding.priority
    if not explicit:
        return {}, 0
    if provider_id not in catalog.providers:
        raise bad_parameter("provider_id", f"unknown provider {provider_id!r}")
    raise bad_parameter(
        "provider_id", f"provider {provider_id!r} does not run workflow {workflow_id!r}"
    )


def _user_id(request: web.Request, data: dict[str, Any]) -> str:
    """Whose run: the caller's; an admin (or anyone, without auth) may name the user."""
    caller = principal(request)
    named = data.get("user_id")
    if named is not None and (not isinstance(named, str) or not named):
        raise bad_parameter("input.user_id", "must be a non-empty string")
    if caller.admin:
        return named or caller.user_id or ANONYMOUS_USER
    if named is not None and named != caller.user_id:
        raise bad_parameter("input.user_id", "must be your own user id")
    return caller.user_id or ANONYMOUS_USER
