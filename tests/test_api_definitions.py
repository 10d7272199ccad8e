"""Definition routes over HTTP: listings, versions, and registering JSON and YAML bundles."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.api_support import ALICE, Api

WORKFLOW: dict[str, Any] = {
    "id": "wf_api",
    "provider_id": "api-provider",
    "name": "Registered over HTTP",
    "steps": [{"id": "one", "service": "studio", "endpoint": "/one"}],
}
PROVIDER: dict[str, Any] = {
    "provider": {"id": "api-provider", "name": "API provider"},
    "workflows": [{"workflow_id": "wf_api", "triggers": [{"event": "onCreate"}]}],
}


@pytest.mark.parametrize(
    ("kind", "ids"),
    [
        ("workflows", ["blob_processing_workflow", "book_chapter_expansion"]),
        ("providers", ["book-writer", "memmie-studio"]),
        ("schemas", ["blob_input_schema_v1", "blob_output_schema_v1"]),
    ],
)
@pytest.mark.asyncio
async def test_listings_show_what_runs(api: Api, kind: str, ids: list[str]) -> None:
    reply = await api.get(f"/v1/{kind}", token=ALICE)
    assert reply.status == 200
    assert [item["id"] for item in reply.body["items"]] == ids
    assert reply.body["total"] == len(ids)
    assert all(item["version"] == 1 and item["content_hash"] for item in reply.body["items"])


@pytest.mark.asyncio
async def test_a_provider_lists_its_workflows(api: Api) -> None:
    reply = await api.get("/v1/providers")
    by_id = {item["id"]: item for item in reply.body["items"]}
    assert by_id["book-writer"]["workflows"] == ["book_chapter_expansion"]


@pytest.mark.asyncio
async def test_registering_json_then_yaml_makes_versions(api: Api) -> None:
    first = await api.post("/v1/registry", json={"workflows": [WORKFLOW], "providers": [PROVIDER]})
    assert first.status == 200, first.text
    assert first.body == {
        "ok": True,
        "results": [
            {"kind": "workflow", "id": "wf_api", "version": 1, "changed": True},
            {"kind": "provider", "id": "api-provider", "version": 1, "changed": True},
        ],
    }
    changed = {**WORKFLOW, "name": "Renamed"}
    bundle = yaml.safe_dump({"workflows": [changed]}).encode()
    second = await api.post(
        "/v1/registry", data=bundle, headers={"Content-Type": "application/yaml"}
    )
    assert second.status == 200, second.text
    assert second.body["results"] == [
        {"kind": "workflow", "id": "wf_api", "version": 2, "changed": True}
    ]
    # The replica that answered runs the new version at once.
    listed = {item["id"]: item for item in (await api.get("/v1/workflows")).body["items"]}
    assert listed["wf_api"]["version"] == 2
    assert listed["wf_api"]["name"] == "Renamed"

    item = await api.get("/v1/workflows/wf_api", token=ALICE)
    assert item.status == 200
    assert item.body["version"] == 2
    assert item.body["definition"]["name"] == "Renamed"
    assert [v["version"] for v in item.body["versions"]] == [2, 1]
    assert all(v["registered_at"].endswith("Z") for v in item.body["versions"])


@pytest.mark.asyncio
async def test_an_invalid_bundle_is_400_with_every_problem_and_changes_nothing(api: Api) -> None:
    broken = {**WORKFLOW, "steps": [{"id": "one", "service": "studio"}]}
    reply = await api.post("/v1/registry", json={"workflows": [broken]})
    assert reply.status == 400
    assert reply.body["ok"] is False
    assert reply.body["error"]["code"] == "invalid_bundle"
    assert reply.body["errors"][0]["id"] == "wf_api"
    assert "endpoint" in reply.body["errors"][0]["path"]
    assert (await api.get("/v1/workflows/wf_api")).status == 404


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b"{}", "text/plain", 415),
        (b"{not json", "application/json", 400),
        (b"a: [", "application/yaml", 400),
        (b"[]", "application/json", 400),
    ],
)
@pytest.mark.asyncio
async def test_malformed_bundles_are_refused(
    api: Api, data: bytes, content_type: str, status: int
) -> None:
    reply = await api.post("/v1/registry", data=data, headers={"Content-Type": content_type})
    assert reply.status == status
    assert reply.body["error"]["message"]


@pytest.mark.parametrize("kind", ["workflows", "providers", "schemas"])
@pytest.mark.asyncio
async def test_an_unknown_item_is_404(api: Api, kind: str) -> None:
    reply = await api.get(f"/v1/{kind}/nope")
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


@pytest.mark.asyncio
async def test_an_item_s_versions_are_listed_without_their_documents(api: Api) -> None:
    for name in ("First", "Second", "Third"):
        reply = await api.post("/v1/registry", json={"workflows": [{**WORKFLOW, "name": name}]})
        assert reply.status == 200, reply.text
    versions = await api.service.definitions.versions("workflow", WORKFLOW["id"])
    assert [row["version"] for row in versions] == [3, 2, 1]
    assert all("document" not in row for row in versions)  # only the one shown is read
    shown = await api.get(f"/v1/workflows/{WORKFLOW['id']}")
    assert shown.body["version"] == 3
    assert shown.body["definition"]["name"] == "Third"
    assert [v["version"] for v in shown.body["versions"]] == [3, 2, 1]
