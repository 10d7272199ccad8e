"""The demo downstream services answer what the example workflows expect.

Requests have the shapes the workflows' input_maps produce; the last tests run both
example workflows through the real engine against the demo, as `blobflow dev` will.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDictProxy
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.deltas import derive_deltas
from blobflow.devtools.demo import serve_demo
from blobflow.downstream.http_caller import ServiceClients
from blobflow.runtime.engine import Engine
from blobflow.store.executions import ExecutionStore
from tests.support import binding_of, blob_event, example_catalog, start

Db = AsyncDatabase[dict[str, Any]]

# What book_chapter_expansion's expand_content sends, for the example chapter.
PROMPT = (
    "Expand the following chapter content with more descriptive details,\n"
    "character development, and sensory descriptions while maintaining\n"
    "the author's voice and a noir style:\n\n"
    "The rain had not stopped for three days.\n"
)


@dataclass
class Demo:
    http: aiohttp.ClientSession
    url: str

    async def call(
        self, method: str, path: str, body: Any = None, *, key: str | None = None
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        """Status, JSON answer and headers; `body` bytes are sent as they are."""
        headers = {"Idempotency-Key": key} if key else {}
        payload: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with self.http.request(
            method, self.url + path, headers=headers, **payload
        ) as response:
            return response.status, await response.json(), response.headers

    async def ok(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Any:
        status, answer, _ = await self.call(method, path, body, key=key)
        assert status == 200, answer
        return answer


@pytest_asyncio.fixture
async def demo() -> AsyncIterator[Demo]:
    async with serve_demo() as url, aiohttp.ClientSession() as http:
        yield Demo(http, url)


@pytest.mark.asyncio
async def test_blob_processing_endpoints(demo: Demo) -> None:
    validated = await demo.ok(
        "POST", "/blobs/validate", {"blob_id": "b-1", "content_type": "text/plain"}
    )
    metadata = await demo.ok(
        "POST",
        "/blobs/metadata",
        {"blob_id": "b-1", "extract_fields": ["content_type", "size", "checksum"]},
    )
    trigger = {"blob_id": "b-1", "provider_ids": None, "metadata": metadata}
    triggered = await demo.ok("POST", "/providers/trigger", trigger)
    generated = await demo.ok(
        "POST", "/deltas/generate", {"blob_id": "b-1", "provider_outputs": triggered}
    )
    rolled_back = await demo.ok(
        "POST", "/providers/rollback", {"blob_id": "b-1", "execution_id": "e-1"}
    )

    assert validated["valid"] is True
    assert set(metadata) == {"blob_id", "content_type", "size", "checksum"}
    assert isinstance(metadata["size"], int)
    assert metadata["checksum"].startswith("sha256:")
    [job] = triggered["triggered"]
    assert job["provider_id"] == "memmie-studio"
    ops = generated["delta_operations"]
    assert len(ops) == 2
    assert all(isinstance(op["op"], str) and op["path"].startswith("/") for op in ops)
    assert ops[0]["value"] == ["memmie-studio"]
    assert generated["created_blobs"] == [
        {"id": "b-1-summary", "type": "summary", "parent_id": "b-1"}
    ]
    drafts = derive_deltas(generated)
    assert [d.type for d in drafts] == ["set", "set", "create_derived"]
    assert rolled_back["rolled_back"] == [job["job_id"]]


@pytest.mark.asyncio
async def test_validate_flags_a_bad_content_type_and_accepts_none(demo: Demo) -> None:
    bad = await demo.ok("POST", "/blobs/validate", {"blob_id": "b", "content_type": "text"})
    absent = await demo.ok("POST", "/blobs/validate", {"blob_id": "b", "content_type": None})

    assert (bad["valid"], len(bad["problems"])) == (False, 1)
    assert absent["valid"] is True


@pytest.mark.asyncio
async def test_book_chapter_endpoints(demo: Demo) -> None:
    chapter = await demo.ok("GET", "/blobs/blob-chapter-7")
    expanded = await demo.ok(
        "POST",
        "/generate",
        {"prompt": PROMPT, "model": "gpt-4", "temperature": 0.7, "max_tokens": 3000},
    )
    check = {
        "book_id": "book-writer",
        "chapter_content": expanded["text"],
        "chapter_number": chapter["metadata"]["chapter_number"],
    }
    consistency = await demo.ok("POST", "/consistency/check", check)
    metadata = {
        "type": "expanded_chapter",
        "original_id": "blob-chapter-7",
        "consistency_score": consistency["score"],
        "word_count": expanded["word_count"],
    }
    save = {"parent_id": "blob-chapter-7", "content": expanded["text"], "metadata": metadata}
    saved = await demo.ok("POST", "/blobs", save)
    reloaded = await demo.ok("GET", f"/blobs/{saved['id']}")

    assert isinstance(chapter["content"], str)
    assert chapter["metadata"]["chapter_number"] == 7
    text = expanded["text"]
    # An expansion of the last paragraph, in the style the prompt asks for.
    assert text.startswith("The rain had not stopped for three days. ")
    assert len(text.split()) > 8
    assert expanded["word_count"] == len(text.split())
    assert 0 <= consistency["score"] <= 1
    assert [d.type for d in derive_deltas({"deltas": saved["deltas"]})] == ["add", "set"]
    assert reloaded == {"id": saved["id"], "content": text, "metadata": metadata}


@pytest.mark.asyncio
async def test_answers_are_deterministic_across_apps() -> None:
    answers = []
    for _ in range(2):
        async with serve_demo() as url, aiohttp.ClientSession() as http:
            demo = Demo(http, url)
            answers.append(
                [
                    await demo.ok("GET", "/blobs/any-blob"),
                    await demo.ok("POST", "/generate", {"prompt": PROMPT}),
                    await demo.ok("POST", "/consistency/check", {"chapter_content": "x"}),
                    await demo.ok("POST", "/blobs/metadata", {"blob_id": "x"}),
                    await demo.ok("POST", "/providers/trigger", {"blob_id": "x"}),
                ]
            )

    assert answers[0] == answers[1]


@pytest.mark.asyncio
async def test_generate_stops_at_max_tokens(demo: Demo) -> None:
    answer = await demo.ok("POST", "/generate", {"prompt": PROMPT, "max_tokens": 5})

    assert answer["text"] == "The rain had not stopped"
    assert (answer["word_count"], answer["finish_reason"]) == (5, "length")


@pytest.mark.asyncio
async def test_idempotency_key_replays_the_first_answer_without_the_side_effect(
    demo: Demo,
) -> None:
    first = await demo.ok("POST", "/providers/trigger", {"blob_id": "b"}, key="e-1:trigger")
    status, replay, headers = await demo.call(
        "POST", "/providers/trigger", {"blob_id": "b"}, key="e-1:trigger"
    )
    unkeyed = await demo.ok("POST", "/providers/trigger", {"blob_id": "b"})
    saved = await demo.ok("POST", "/blobs", {"content": "x"}, key="e-1:save")
    again = await demo.ok("POST", "/blobs", {"content": "x"}, key="e-1:save")
    other = await demo.ok("POST", "/blobs", {"content": "x"}, key="e-2:save")

    assert (status, replay) == (200, first)
    assert headers["Idempotent-Replayed"] == "true"
    assert [first["triggered"][0]["job_id"], unkeyed["triggered"][0]["job_id"]] == [
        "job-1",
        "job-2",
    ]
    assert again == saved
    assert [saved["id"], other["id"]] == ["blob-1", "blob-2"]


@pytest.mark.asyncio
async def test_a_key_is_scoped_to_its_endpoint(demo: Demo) -> None:
    trigger = await demo.ok("POST", "/providers/trigger", {"blob_id": "b"}, key="k")
    rollback = await demo.ok("POST", "/providers/rollback", {"blob_id": "b"}, key="k")

    assert rollback["rolled_back"] == [trigger["triggered"][0]["job_id"]]


POSTS = [
    "/blobs/validate",
    "/blobs/metadata",
    "/providers/trigger",
    "/providers/rollback",
    "/deltas/generate",
    "/generate",
    "/consistency/check",
    "/blobs",
]


@pytest.mark.asyncio
@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", {}])
async def test_malformed_body_is_a_json_400(demo: Demo, path: str, body: Any) -> None:
    status, answer, _ = await demo.call("POST", path, body, key="k")

    assert status == 400
    assert answer["error"]["code"] == "bad_request"
    assert answer["error"]["message"]


@pytest.mark.asyncio
async def test_wrong_field_types_are_400(demo: Demo) -> None:
    status, answer, _ = await demo.call("POST", "/generate", {"prompt": "p", "max_tokens": "9"})

    assert status == 400
    assert "max_tokens" in answer["error"]["message"]


@pytest.mark.asyncio
async def test_unknown_route_is_a_json_404(demo: Demo) -> None:
    status, answer, _ = await demo.call("GET", "/nowhere")

    assert (status, answer["error"]["code"]) == (404, "not_found")


# -- the example workflows, end to end --------------------------------------------------


@pytest.mark.asyncio
async def test_example_workflows_complete_against_the_demo(mongo_db: Db) -> None:
    catalog = example_catalog()
    store = ExecutionStore(mongo_db)
    await store.ensure_indexes()
    async with serve_demo() as url, ServiceClients({"studio": url, "core": url}) as clients:
        engine = Engine(catalog, store, clients)
        processing = await start(
            engine,
            blob_event("evt-1", "blob-1", metadata={"content_type": "text/plain"}),
            binding_of(catalog, "blob_processing_workflow"),
        )
        expansion = await start(
            engine,
            blob_event("evt-2", "blob-chapter-7", metadata={"type": "chapter"}, content="It."),
            binding_of(catalog, "book_chapter_expansion"),
        )

    assert processing is not None
    assert processing.status == "completed", processing.error
    assert expansion is not None
    assert expansion.status == "completed", expansion.error
    assert [s.status for s in expansion.steps] == ["completed"] * 4
    deltas = [d async for d in mongo_db["deltas"].find({}, sort=[("blob_id", 1), ("version", 1)])]
    assert [(d["blob_id"], d["type"]) for d in deltas] == [
        ("blob-1", "set"),
        ("blob-1", "set"),
        ("blob-1", "create_derived"),
        ("blob-chapter-7", "add"),
        ("blob-chapter-7", "set"),
        ("blob-chapter-7", "transform"),
        ("blob-chapter-7", "create_derived"),
    ]


@pytest.mark.asyncio
async def test_a_slow_blob_holds_provider_processing(demo: Demo) -> None:
    fast = await demo.ok("POST", "/providers/trigger", {"blob_id": "quick-1"})
    assert fast["blob_id"] == "quick-1"
    slow = asyncio.ensure_future(demo.call("POST", "/providers/trigger", {"blob_id": "slow-1"}))
    done, _ = await asyncio.wait({slow}, timeout=0.3)
    assert not done  # held for SLOW_S: something to cancel
    slow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slow
