"""Registration (§6): bundles, the reply format, and the request/reply endpoint on real servers."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.bundles import (
    MAX_ERRORS,
    ItemResult,
    bundle_documents,
    error_reply,
    parse_bundle,
)
from blobflow.core.sources import KIND_FOLDERS, SourceDocument, read_paths
from blobflow.core.tokens import ApiToken, parse_api_tokens
from blobflow.errors import DefinitionError, Problem, RegistrationConflict
from blobflow.messaging.registration import RegistrationResponder
from blobflow.runtime.registration import register_bundle
from blobflow.store.definitions import DefinitionStore

ROOT = Path(__file__).resolve().parent.parent
Db = AsyncDatabase[dict[str, Any]]
SCHEMA = {
    "id": "s",
    "provider_id": "p",
    "name": "S",
    "type": "input",
    "definition": {"type": "object"},
}
WORKFLOW = {"id": "wf", "name": "W", "steps": [{"id": "a", "service": "x", "endpoint": "/a"}]}


def example_bundle() -> dict[str, list[Any]]:
    documents, problems = read_paths([ROOT / name for name in KIND_FOLDERS])
    assert problems == []
    return {
        key: [document.data for document in documents if document.kind == kind]
        for key, kind in KIND_FOLDERS.items()
    }


def _entry(kind: str | None, item_id: str | None, path: str, message: str) -> dict[str, Any]:
    return {"kind": kind, "id": item_id, "path": path, "message": message}


def _problems(excinfo: pytest.ExceptionInfo[DefinitionError]) -> list[tuple[str, str, str]]:
    return [(p.source, ".".join(map(str, p.path)), p.message) for p in excinfo.value.problems]


# --- bundles -----------------------------------------------------------------------------


def test_bundle_items_become_documents_named_by_their_place() -> None:
    bundle = {"providers": [{"provider": {"id": "p"}}], "workflows": [WORKFLOW, WORKFLOW]}
    documents = bundle_documents({**bundle, "schemas": [SCHEMA]})
    assert [(d.kind, d.source) for d in documents] == [
        ("schema", "schemas[0]"),
        ("workflow", "workflows[0]"),
        ("workflow", "workflows[1]"),
        ("provider", "providers[0]"),
    ]
    assert documents[0].data == SCHEMA


@pytest.mark.parametrize("bundle", [{}, {"schemas": [], "workflows": [], "providers": []}])
def test_an_empty_bundle_is_valid(bundle: dict[str, Any]) -> None:
    assert bundle_documents(bundle) == []


@pytest.mark.parametrize(
    ("bundle", "expected"),
    [
        ([], [("bundle", "", "must be an object")]),
        ({"schema": []}, [("bundle", "schema", "unknown key (did you mean 'schemas'?)")]),
        ({"workflows": {"id": "wf"}}, [("bundle", "workflows", "must be a list")]),
        ({"schemas": None}, [("bundle", "schemas", "must be a list")]),
        ({"workflows": [WORKFLOW, "wf"]}, [("workflows[1]", "", "a workflow must be an object")]),
        (
            {"providers": [[]], "extra": 1},
            [
                ("bundle", "extra", "unknown key"),
                ("providers[0]", "", "a provider must be an object"),
            ],
        ),
    ],
)
def test_malformed_bundles_are_refused_with_every_problem(
    bundle: Any, expected: list[tuple[str, str, str]]
) -> None:
    with pytest.raises(DefinitionError) as excinfo:
        bundle_documents(bundle)
    found = _problems(excinfo)
    assert len(found) == len(expected)
    for (source, path, message), (want_source, want_path, want_message) in zip(
        found, expected, strict=True
    ):
        assert (source, path) == (want_source, want_path)
        assert want_message in message


BOMB = b"""
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
schemas: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
"""


@pytest.mark.parametrize(
    ("payload", "content_type", "message"),
    [
        (b'{"schemas": [', None, "invalid JSON"),
        (b"\xff\xfe", "application/json", "invalid JSON"),
        (b'{"schemas": [NaN]}', None, "invalid JSON"),
        (b"schemas: [", "application/yaml", "invalid YAML"),
        (BOMB, "application/x-yaml", "expands to more than"),
        (b"schemas: []\n---\nworkflows: []\n", "text/yaml", "expected one YAML document"),
        (b"[1, 2]", None, "must be an object"),
    ],
)
def test_bad_payloads_are_definition_errors(
    payload: bytes, content_type: str | None, message: str
) -> None:
    with pytest.raises(DefinitionError) as excinfo:
        parse_bundle(payload, content_type)
    assert [p.source for p in excinfo.value.problems] == ["bundle"]
    assert message in excinfo.value.problems[0].message


def test_json_is_the_default_and_keeps_big_integers() -> None:
    (document,) = parse_bundle(orjson.dumps({"schemas": [SCHEMA]}))
    assert (document.kind, document.data) == ("schema", SCHEMA)
    text = b'{"schemas": [{"id": "s", "definition": {"maximum": 1180591620717411303424}}]}'
    (document,) = parse_bundle(text, "application/json; charset=utf-8")
    assert document.data["definition"]["maximum"] == 2**70


def test_yaml_items_remember_their_lines_within_the_bundle() -> None:
    text = b"workflows:\n  - id: wf\n    steps:\n      - id: a\n        service: x\n"
    (document,) = parse_bundle(text, "Application/YAML")
    assert document.source == "workflows[0]"
    assert document.data == {"id": "wf", "steps": [{"id": "a", "service": "x"}]}
    assert document.line_of(("steps", 0, "service")) == 5
    assert document.line_of(("id",)) == 2


# --- the reply ---------------------------------------------------------------------------


def test_problems_map_to_kind_id_path_and_message() -> None:
    documents = bundle_documents({"workflows": [{"id": "wf"}, {"name": 3}]})
    error = DefinitionError(
        [
            Problem("workflows[0]", ("steps", 2, "input_map", "x"), "bad", 7),
            Problem("workflows[1]", ("name",), "must be a string"),
            Problem("registered:provider:a:b:v12", ("workflows", 0, "workflow_id"), "gone"),
            Problem("bundle", ("schema",), "unknown key"),
            Problem("schemas[3]", (), "a schema must be an object"),
        ]
    )
    assert error_reply(error, documents) == {
        "ok": False,
        "errors": [
            _entry("workflow", "wf", "steps[2].input_map.x", "bad (workflows[0], line 7)"),
            _entry("workflow", None, "name", "must be a string (workflows[1])"),
            _entry("provider", "a:b", "workflows[0].workflow_id", "gone (registered version 12)"),
            _entry(None, None, "schema", "unknown key"),
            _entry("schema", None, "", "a schema must be an object (schemas[3])"),
        ],
    }


def test_a_flood_of_problems_is_cut_short() -> None:
    error = DefinitionError([Problem("bundle", (), f"problem {i}") for i in range(MAX_ERRORS + 5)])
    errors = error_reply(error)["errors"]
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1]["message"] == "... and 5 more problems"


# --- over NATS ---------------------------------------------------------------------------


@dataclass
class Endpoint:
    nc: NatsClient
    subject: str
    changed: Subscription
    reloads: list[int]

    async def request(
        self, payload: Any, headers: dict[str, str] | None = None, timeout_s: float = 10
    ) -> dict[str, Any]:
        data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        reply = await self.nc.request(self.subject, data, timeout=timeout_s, headers=headers)
        assert reply.headers == {"Content-Type": "application/json"}
        result: dict[str, Any] = orjson.loads(reply.data)
        return result

    def announced(self) -> int:
        """Changed notifications received so far; the reply arrives after them, on the same
        connection, so they are all queued by the time a reply is."""
        return self.changed.pending_msgs


@asynccontextmanager
async def endpoint(
    nc: NatsClient,
    prefix: str,
    store: DefinitionStore,
    *,
    fail_reload: bool = False,
    tokens: Sequence[ApiToken] = (),
) -> AsyncIterator[Endpoint]:
    reloads: list[int] = []

    async def on_change() -> None:
        reloads.append(1)
        if fail_reload:
            raise RuntimeError("reload failed")

    subject, changed_subject = f"{prefix}.registry.register", f"{prefix}.registry.changed"
    changed = await nc.subscribe(changed_subject)
    responder = RegistrationResponder(
        nc,
        store,
        subject=subject,
        changed_subject=changed_subject,
        on_change=on_change,
        tokens=tokens,
    )
    async with responder:
        yield Endpoint(nc, subject, changed, reloads)
    await changed.unsubscribe()


async def _store(db: Db) -> DefinitionStore:
    store = DefinitionStore(db)
    await store.ensure_indexes()
    return store


def _results(reply: dict[str, Any]) -> list[tuple[str, str, int, bool]]:
    assert reply["ok"] is True, reply
    return [(r["kind"], r["id"], r["version"], r["changed"]) for r in reply["results"]]


@pytest.mark.asyncio
async def test_examples_register_then_the_same_again_changes_nothing(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    bundle = example_bundle()
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        first = _results(await ep.request(bundle))
        assert (ep.announced(), ep.reloads) == (1, [1])
        again = _results(await ep.request(bundle))
        assert (ep.announced(), ep.reloads) == (1, [1])

    assert len(first) == sum(len(items) for items in bundle.values()) == 6
    assert {(kind, item_id) for kind, item_id, _, _ in first} >= {
        ("schema", "blob_input_schema_v1"),
        ("workflow", "blob_processing_workflow"),
        ("provider", "book-writer"),
    }
    assert all(version == 1 and changed for _, _, version, changed in first)
    assert again == [(kind, item_id, 1, False) for kind, item_id, _, _ in first]
    message = await ep.changed.next_msg(timeout=1)
    assert message.data == b""


@pytest.mark.asyncio
async def test_changed_content_gets_the_next_version(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    bundle = example_bundle()
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        _results(await ep.request(bundle))
        changed = copy.deepcopy(bundle["workflows"][0])
        changed["description"] = "something else"
        reply = await ep.request({"workflows": [changed]})
        assert (ep.announced(), ep.reloads) == (2, [1, 1])
    assert _results(reply) == [("workflow", changed["id"], 2, True)]


@pytest.mark.asyncio
async def test_an_invalid_bundle_is_refused_whole_and_stores_nothing(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    bundle = example_bundle()
    broken = copy.deepcopy(bundle["workflows"][0])
    broken["steps"][1]["timout_seconds"] = 5
    provider = copy.deepcopy(bundle["providers"][0])
    provider["workflows"][0]["workflow_id"] = "nope"
    bundle |= {"workflows": [broken, *bundle["workflows"][1:]], "providers": [provider]}
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        reply = await ep.request(bundle)
        assert (ep.announced(), ep.reloads) == (0, [])

    assert reply["ok"] is False
    errors = {(e["kind"], e["id"], e["path"]): e["message"] for e in reply["errors"]}
    typo = ("workflow", broken["id"], "steps[1].timout_seconds")
    unknown = ("provider", provider["provider"]["id"], "workflows[0].workflow_id")
    assert errors.keys() == {typo, unknown}
    assert errors[typo] == "unknown field (did you mean 'timeout_seconds'?) (workflows[0])"
    assert errors[unknown].startswith("unknown workflow 'nope'")
    assert errors[unknown].endswith("(providers[0])")
    assert await mongo_db["definitions"].count_documents({}) == 0


@pytest.mark.asyncio
async def test_an_item_registered_earlier_that_a_bundle_breaks_is_named(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    bundle = example_bundle()
    schema = next(s for s in bundle["schemas"] if s["id"] == "blob_input_schema_v1")
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        _results(await ep.request(bundle))
        reply = await ep.request({"schemas": [{**schema, "type": "output"}]})
    assert reply == {
        "ok": False,
        "errors": [
            {
                "kind": "workflow",
                "id": "blob_processing_workflow",
                "path": "input_schema_id",
                "message": "schema 'blob_input_schema_v1' is of type 'output' "
                "(registered version 1)",
            }
        ],
    }


@pytest.mark.asyncio
async def test_yaml_bundles_report_lines_and_bad_payloads_are_answered(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    text = (
        b"workflows:\n  - id: wf\n    provider_id: p\n    name: W\n"
        b"    steps:\n      - id: a\n        endpoint: /a\n"
    )
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        yaml_reply = await ep.request(text, {"content-type": "application/yaml"})
        json_reply = await ep.request(b"{oops")
        empty_reply = await ep.request({})
    assert yaml_reply["errors"] == [
        _entry("workflow", "wf", "steps[0].service", "is required (workflows[0], line 6)")
    ]
    assert json_reply["ok"] is False
    [error] = json_reply["errors"]
    assert (error["kind"], error["id"], error["path"]) == (None, None, "")
    assert error["message"].startswith("invalid JSON")
    assert empty_reply == {"ok": True, "results": []}


class BrokenStore(DefinitionStore):
    calls = 0

    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]:
        self.calls += 1
        raise RuntimeError("disk on fire")


@pytest.mark.asyncio
async def test_an_unexpected_failure_is_still_answered_and_logged(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    async with endpoint(nats_client, stream_prefix, BrokenStore(mongo_db)) as ep:
        reply = await ep.request({"schemas": [SCHEMA]})
        assert ep.announced() == 0
    assert reply == {
        "ok": False,
        "errors": [_entry(None, None, "", "internal error: RuntimeError: disk on fire")],
    }
    assert "registration request failed" in caplog.text


@pytest.mark.asyncio
async def test_a_failing_reload_still_replies_ok_and_tells_the_others(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    store = await _store(mongo_db)
    async with endpoint(nats_client, stream_prefix, store, fail_reload=True) as ep:
        reply = await ep.request({"schemas": [SCHEMA]})
        assert (ep.announced(), ep.reloads) == (1, [1])
    assert _results(reply) == [("schema", "s", 1, True)]
    assert "reloading definitions after a registration failed" in caplog.text


@pytest.mark.asyncio
async def test_a_request_without_reply_subject_is_ignored(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db, caplog: pytest.LogCaptureFixture
) -> None:
    store = BrokenStore(mongo_db)
    caplog.set_level(logging.WARNING, "blobflow.messaging.registration")
    async with endpoint(nats_client, stream_prefix, store) as ep:
        await nats_client.publish(ep.subject, orjson.dumps({"schemas": [SCHEMA]}))
        await ep.request({})  # handled after the first, one at a time
    assert store.calls == 0
    assert "has no reply subject; ignored" in caplog.text


@pytest.mark.asyncio
async def test_one_replica_answers_each_request_and_none_after_exit(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    stores = [BrokenStore(mongo_db), BrokenStore(mongo_db)]
    subject = f"{stream_prefix}.registry.register"
    async with (
        RegistrationResponder(nats_client, stores[0], subject=subject),
        RegistrationResponder(nats_client, stores[1], subject=subject),
    ):
        replies = await asyncio.gather(
            *(nats_client.request(subject, b'{"schemas": [{}]}', timeout=10) for _ in range(6))
        )
    assert all(orjson.loads(reply.data)["ok"] is False for reply in replies)
    assert stores[0].calls + stores[1].calls == 6
    with pytest.raises(NoRespondersError):
        await nats_client.request(subject, b"{}", timeout=2)


class BusyStore(DefinitionStore):
    async def register(self, documents: Sequence[SourceDocument]) -> list[ItemResult]:
        raise RegistrationConflict("registration conflicted 5 times; try again")


@pytest.mark.asyncio
async def test_a_lost_race_asks_to_try_again_rather_than_reporting_a_bug(mongo_db: Db) -> None:
    reply = await register_bundle(BusyStore(mongo_db), bundle_documents({"schemas": [SCHEMA]}))
    assert reply == {
        "ok": False,
        "errors": [_entry(None, None, "", "registration conflicted 5 times; try again")],
        "retryable": True,
    }


# --- tokens (§6: with tokens configured, registering needs an admin token) ---------------

TOKENS = parse_api_tokens("root-token=root:admin,alice-token=alice")
NEEDS_TOKEN = "a valid admin token is required (Authorization: Bearer <token>)"
NEEDS_ADMIN = "registering definitions needs an admin token"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (None, NEEDS_TOKEN),
        ({"Authorization": "Bearer wrong-token"}, NEEDS_TOKEN),
        ({"Authorization": "root-token"}, NEEDS_TOKEN),
        ({"Authorization": "Basic root-token"}, NEEDS_TOKEN),
        ({"authorization": "Bearer alice-token"}, NEEDS_ADMIN),
    ],
)
@pytest.mark.asyncio
async def test_with_tokens_a_registration_without_an_admin_token_changes_nothing(
    nats_client: NatsClient,
    stream_prefix: str,
    mongo_db: Db,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str] | None,
    message: str,
) -> None:
    caplog.set_level(logging.WARNING, "blobflow.messaging.registration")
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db), tokens=TOKENS) as ep:
        reply = await ep.request({"schemas": [SCHEMA]}, headers)
        assert (ep.announced(), ep.reloads) == (0, [])
    assert reply == {"ok": False, "errors": [_entry("auth", None, "", message)]}
    assert await mongo_db["definitions"].count_documents({}) == 0
    assert "refused a registration request" in caplog.text
    assert "root-token" not in caplog.text
    assert "alice-token" not in caplog.text


@pytest.mark.asyncio
async def test_with_tokens_an_admin_token_registers(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    headers = {"Authorization": "bearer root-token", "Content-Type": "application/json"}
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db), tokens=TOKENS) as ep:
        reply = await ep.request({"schemas": [SCHEMA]}, headers)
        assert (ep.announced(), ep.reloads) == (1, [1])
    assert _results(reply) == [("schema", "s", 1, True)]


@pytest.mark.asyncio
async def test_without_tokens_no_token_is_needed(
    nats_client: NatsClient, stream_prefix: str, mongo_db: Db
) -> None:
    async with endpoint(nats_client, stream_prefix, await _store(mongo_db)) as ep:
        reply = await ep.request({"schemas": [SCHEMA]}, {"Authorization": "Bearer anything"})
    assert _results(reply) == [("schema", "s", 1, True)]
