"""The commands as a user runs them: separate processes against real servers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.subjects import StreamNames
from blobflow.devtools.managed_process import free_port
from blobflow.messaging.client import BlobflowClient
from blobflow.messaging.registration import RegistrationResponder
from blobflow.messaging.streams import ensure_streams
from blobflow.store.definitions import DefinitionStore
from tests.servers import Downstream, MongoDeployment, NatsServer
from tests.support import ROOT, eventually, script_studio

Db = AsyncDatabase[dict[str, Any]]


async def _blobflow(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blobflow.cli.main",
        *args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_dev_once_runs_the_demo_to_its_deltas(tmp_path: Path) -> None:
    code, out, err = await _blobflow(
        "dev", "--once", "--data", str(tmp_path / "data"), env={"BLOBFLOW_HTTP_PORT": "0"}
    )
    assert code == 0, out + err
    assert "✓ 2 executions, 7 deltas stored, 7 delta events" in out


@pytest.mark.asyncio
async def test_publish_puts_an_event_on_the_blobs_stream(
    nats_server: NatsServer, nats_client: NatsClient
) -> None:
    js = nats_client.jetstream()
    names = StreamNames()
    await ensure_streams(js, names)
    try:
        code, out, err = await _blobflow(
            "publish",
            "created",
            "--blob-id",
            "b 1",
            "--user-id",
            "u1",
            "--metadata",
            "type=chapter",
            "--metadata",
            "n=7",
            "--content",
            "hello",
            env={"BLOBFLOW_NATS_URL": nats_server.url},
        )
        assert code == 0, err
        event_id = out.strip()
        info = await js.stream_info(names.blobs)
        message = await js.get_msg(names.blobs, info.state.last_seq)
        event = orjson.loads(message.data or b"{}")
        assert event["event_id"] == event_id
        assert event["metadata"] == {"type": "chapter", "n": 7}
        assert message.subject == "blobs.created"
    finally:
        nats_server.delete_streams(names.blobs)
        nats_server.delete_streams(names.deltas)
        nats_server.delete_streams(names.dlq)


@pytest.mark.asyncio
async def test_register_sends_a_folder_and_reports_versions(
    nats_server: NatsServer, nats_client: NatsClient, mongo_db: Db
) -> None:
    store = DefinitionStore(mongo_db)
    await store.ensure_indexes()
    async with RegistrationResponder(nats_client, store):
        code, out, err = await _blobflow(
            "register", str(ROOT), env={"BLOBFLOW_NATS_URL": nats_server.url}
        )
    assert code == 0, err
    assert "workflow book_chapter_expansion v1 changed" in out.splitlines()
    assert len(out.splitlines()) == 6


@pytest.mark.asyncio
async def test_bad_configuration_exits_2_with_one_line_per_problem() -> None:
    code, _, err = await _blobflow(
        "serve", env={"BLOBFLOW_HTTP_PORT": "eighty", "BLOBFLOW_LOG_LEVEL": "loud"}
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert any("BLOBFLOW_HTTP_PORT" in line for line in lines)


@pytest.mark.asyncio
async def test_serve_processes_events_and_stops_cleanly_on_sigterm(
    nats_server: NatsServer,
    nats_client: NatsClient,
    mongodb: MongoDeployment,
    mongo_db_name: str,
    mongo_db: Db,
    downstream: Downstream,
) -> None:
    script_studio(downstream)
    port = free_port()
    env = {
        "BLOBFLOW_NATS_URL": nats_server.url,
        "BLOBFLOW_MONGODB_URL": mongodb.url,
        "BLOBFLOW_MONGODB_DATABASE": mongo_db_name,
        "BLOBFLOW_DEFINITIONS": str(ROOT),
        "BLOBFLOW_HTTP_PORT": str(port),
        "BLOBFLOW_SERVICE_STUDIO_URL": downstream.url,
        "BLOBFLOW_SERVICE_CORE_URL": downstream.url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "blobflow.cli.main",
        "serve",
        cwd=ROOT,
        env={**os.environ, **env},
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def ready() -> bool:
            url = f"http://127.0.0.1:{port}/readyz"
            try:
                async with aiohttp.ClientSession() as http, http.get(url) as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await eventually(ready, timeout_s=30)
        client = BlobflowClient(nats_client)
        await client.publish_event("created", event_id="serve-1", blob_id="b", user_id="u")

        async def done() -> bool:
            return await mongo_db["executions"].count_documents({"status": "completed"}) == 1

        await eventually(done, timeout_s=30)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
        assert process.stderr is not None
        logged = (await process.stderr.read()).decode().splitlines()
        nats_server.delete_streams("BLOBS")
        nats_server.delete_streams("DELTAS")
        nats_server.delete_streams("BLOBFLOW_DLQ")
    records = [orjson.loads(line) for line in logged if line.startswith("{")]
    assert any(r["message"].startswith("blobflow ready") for r in records), logged


@pytest.mark.asyncio
async def test_serve_refuses_to_start_with_invalid_definitions(
    nats_server: NatsServer, mongodb: MongoDeployment, mongo_db_name: str, tmp_path: Path
) -> None:
    definitions = tmp_path / "definitions"
    shutil.copytree(ROOT / "workflows", definitions / "workflows")
    broken = ROOT / "tests" / "fixtures" / "broken" / "workflows" / "unknown_step_ref.yaml"
    shutil.copy(broken, definitions / "workflows")
    code, _, err = await _blobflow(
        "serve",
        env={
            "BLOBFLOW_NATS_URL": nats_server.url,
            "BLOBFLOW_MONGODB_URL": mongodb.url,
            "BLOBFLOW_MONGODB_DATABASE": mongo_db_name,
            "BLOBFLOW_DEFINITIONS": str(definitions),
            "BLOBFLOW_HTTP_PORT": "0",
        },
    )
    assert code == 2
    assert f"{definitions}/workflows/unknown_step_ref.yaml:14: steps[1].input_map.prompt" in err
