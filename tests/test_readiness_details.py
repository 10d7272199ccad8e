"""/readyz and /metrics name what the loaded definitions disable: a binding registered by an
older version whose trigger this version refuses to run (RELIABILITY guarantee 8)."""

from __future__ import annotations

import pytest

from tests.api_support import Api
from tests.test_registry_upgrades import CHAPTER, LEGACY

GAUGE = "blobflow_bindings_disabled"


def _gauge(metrics: str) -> float:
    [line] = [line for line in metrics.splitlines() if line.startswith(f"{GAUGE} ")]
    return float(line.split()[1])


@pytest.mark.asyncio
async def test_readiness_names_disabled_bindings_and_stays_ready(api: Api) -> None:
    ready = await api.get("/readyz", token=None)
    assert ready.status == 200
    assert ready.body["details"] == {
        "definitions_problem": None,
        "disabled_bindings": [],
        "disabled_schemas": [],
    }
    assert _gauge((await api.get("/metrics", token=None)).text) == 0

    # Registered by a version whose `matches` ran Python's `re`.
    await api.service.definitions.definitions.insert_one(
        {
            "_id": "provider:legacy:1",
            "kind": "provider",
            "id": "legacy",
            "version": 1,
            "hash": "older",
            "document": LEGACY,
            "committed": True,
        }
    )
    await api.service.reload()

    ready = await api.get("/readyz", token=None)
    assert ready.status == 200
    assert ready.body["status"] == "ready"
    assert set(ready.body["checks"].values()) == {True}
    assert ready.body["details"]["disabled_schemas"] == []
    [disabled] = ready.body["details"]["disabled_bindings"]
    assert disabled["provider_id"] == "legacy"
    assert disabled["workflow_id"] == CHAPTER
    assert disabled["reason"].endswith(
        "'^(?!draft)': invalid perl operator: (?! (RE2 has no lookahead)"
    )
    assert _gauge((await api.get("/metrics", token=None)).text) == 1
