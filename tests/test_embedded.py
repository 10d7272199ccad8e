"""The embedded servers `blobflow dev` runs: they start, serve, stop and never linger."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nats
import pytest
from pymongo import AsyncMongoClient

from blobflow.devtools.embedded import (
    EmbeddedMongo,
    EmbeddedNats,
    EmbeddedServerError,
    embedded_servers,
    nats_server_binary,
)

ROOT = Path(__file__).resolve().parent.parent


def gone(pid: int, timeout_s: float = 5.0) -> bool:
    """Whether the process has ended (and been reaped) within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.asyncio
async def test_both_servers_start_serve_and_stop(tmp_path: Path) -> None:
    async with embedded_servers(tmp_path) as (nats_server, mongo):
        pids = [nats_server.pid, mongo.pid]
        client = await nats.connect(nats_server.url, connect_timeout=2, allow_reconnect=False)
        try:
            account = await client.jetstream().account_info()
        finally:
            await client.close()
        mongo_client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            mongo.url, timeoutMS=5000
        )
        try:
            pong = await mongo_client.admin.command("ping")
        finally:
            await mongo_client.close()

        assert account.streams == 0
        assert pong["ok"] == 1
        assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
        assert mongo.url.startswith(f"mongodb://127.0.0.1:{mongo.port}/")
        assert nats_server.data_dir.is_dir()
        assert mongo.data_dir.is_dir()
        assert nats_server.data_dir.is_relative_to(tmp_path)
        assert mongo.data_dir.is_relative_to(tmp_path)
        assert nats_server.log_path.exists()
        assert mongo.log_path.exists()

    assert not nats_server.running
    assert not mongo.running
    assert all(pid is not None and gone(pid) for pid in pids)


def test_a_server_runs_in_a_process_group_of_its_own(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path) as server:
        assert server.pid is not None
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        assert server.startup_seconds is not None
        with pytest.raises(EmbeddedServerError, match="already running"):
            server.start()

    with pytest.raises(EmbeddedServerError, match="closed"):
        server.start()


def test_secantus_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    with EmbeddedMongo(tmp_path) as server:
        port = server.port
        server.stop()
        assert not server.running
        server.start()

        assert server.port == port
        assert (tmp_path / "secantusd.toml").read_text().startswith("#")


def test_missing_nats_binary_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EmbeddedServerError, match="missing or not executable"):
        EmbeddedNats(tmp_path, binary=tmp_path / "nats-server")

    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedServerError, match=r"neither at .* nor on PATH.*embedded"):
        nats_server_binary()


def test_missing_secantus_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    with pytest.raises(EmbeddedServerError, match="SecantusDB is not installed"):
        EmbeddedMongo(tmp_path)


def fake_binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "fake-nats-server"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)
    return path


def test_a_server_that_dies_at_start_reports_its_log(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "fatal: cannot open store" >&2; exit 3')

    with pytest.raises(EmbeddedServerError) as caught:
        EmbeddedNats(tmp_path, binary=binary).start()

    message = str(caught.value)
    assert "exited with code 3 during startup" in message
    assert "fatal: cannot open store" in message


def test_a_server_that_never_gets_ready_is_killed(tmp_path: Path) -> None:
    binary = fake_binary(tmp_path, 'echo "$$" > pid; echo waiting; exec sleep 60')
    server = EmbeddedNats(tmp_path, binary=binary, startup_timeout_s=0.5)

    with pytest.raises(EmbeddedServerError, match=r"not ready after 0.5 s(.|\n)*waiting"):
        server.start()

    assert not server.running
    assert gone(int((tmp_path / "pid").read_text()))


# The parent of `blobflow dev`, in small: start both servers, print their pids, wait.
# Ctrl-C is handled as the CLI does, with add_signal_handler: asyncio.run's own
# handler runs only when the main thread next runs Python code, and the kernel may
# hand SIGINT to an idle worker thread while the main thread sleeps in epoll for
# the whole minute (seen: the parent still asleep 30 s after SIGINT).
_PARENT = textwrap.dedent(
    """
    import asyncio, signal, sys
    from pathlib import Path
    from blobflow.devtools.embedded import EmbeddedMongo, EmbeddedNats, embedded_servers

    async def main(root: Path) -> None:
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, task.cancel)
        async with embedded_servers(root) as (nats, mongo):
            print(nats.pid, mongo.pid, flush=True)
            await asyncio.sleep(60)

    root, ending = Path(sys.argv[1]), sys.argv[2]
    if ending == "ctrl-c":
        try:
            asyncio.run(main(root))
        except asyncio.CancelledError:
            pass
    else:  # started and never stopped: only the atexit hook is left to do it
        servers = [EmbeddedNats(root / "nats"), EmbeddedMongo(root / "mongodb")]
        for server in servers:
            server.start()
        print(*(server.pid for server in servers), flush=True)
    """
)


@pytest.mark.parametrize("ending", ["ctrl-c", "exit"])
def test_servers_do_not_outlive_their_parent(tmp_path: Path, ending: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(tmp_path), ending],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        if ending == "ctrl-c":
            parent.send_signal(signal.SIGINT)
        parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()

    assert all(gone(pid) for pid in pids)


@pytest.mark.asyncio
async def test_one_server_as_an_async_context_manager(tmp_path: Path) -> None:
    async with EmbeddedNats(tmp_path) as server:
        assert server.running

    assert not server.running
