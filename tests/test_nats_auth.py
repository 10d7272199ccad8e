"""deploy/nats-auth.conf on a real nats-server: producers, consumers, registrars and
blobflow itself each get what they need, and only blobflow may use `blobflow.>` (§2)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError

from blobflow.app import start
from blobflow.core.subjects import CHANGED_SUBJECT, REGISTER_SUBJECT, StreamNames, cancel_subject
from blobflow.messaging.client import BlobflowClient
from blobflow.messaging.streams import ensure_streams
from tests.api_support import ADMIN, Servers
from tests.servers import Downstream, MongoDeployment, NatsServer
from tests.servers.nats_server import nats_server_binary
from tests.support import ROOT, eventually, script_studio

DEPLOY = ROOT / "deploy"
PASSWORDS = {
    "blobflow": "blobflow-secret",
    "producer": "producer-secret",
    "consumer": "consumer-secret",
    "registrar": "registrar-secret",
}
ENVIRONMENT = {f"NATS_{user.upper()}_PASSWORD": password for user, password in PASSWORDS.items()}
VIOLATION = "permissions violation"
POEM = {"field": "metadata.type", "operator": "eq", "value": "poem"}


class AuthNatsServer(NatsServer):
    """nats-server with JetStream, on the users and permissions of deploy/nats-auth.conf."""

    def _command(self) -> list[str]:
        return [*super()._command(), "--config", str(DEPLOY / "nats-auth.conf")]


@pytest.fixture
def auth_nats(tmp_path: Path) -> Iterator[AuthNatsServer]:
    """A server of the test's own: its streams start empty, its passwords come from its
    environment as in a deployment."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENVIRONMENT.items():
            patch.setenv(name, value)
        with AuthNatsServer(tmp_path) as server:
            server.start()
            yield server


@asynccontextmanager
async def connected(server: NatsServer, user: str, errors: list[str]) -> AsyncIterator[NatsClient]:
    """A client of `user`; what the server complains of is appended to `errors`, lowered."""

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower().removeprefix("nats: "))

    nc = await nats.connect(
        server.url,
        user=user,
        password=PASSWORDS[user],
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=2,
    )
    try:
        yield nc
    finally:
        await nc.close()


def test_nats_conf_with_the_include_uncommented_is_valid(tmp_path: Path) -> None:
    conf = (DEPLOY / "nats.conf").read_text()
    assert "# include ./nats-auth.conf" in conf
    (tmp_path / "nats.conf").write_text(conf.replace("# include ./", "include ./"))
    (tmp_path / "nats-auth.conf").write_text((DEPLOY / "nats-auth.conf").read_text())
    binary = str(nats_server_binary())
    checked = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "nats.conf")],
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert checked.returncode == 0, checked.stderr
    # A password left unset stops the server rather than letting anyone in.
    unset = subprocess.run(
        [binary, "-t", "-c", str(tmp_path / "nats.conf")],
        env={},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert unset.returncode != 0
    assert "NATS_BLOBFLOW_PASSWORD" in unset.stdout + unset.stderr


@pytest.mark.asyncio
async def test_anonymous_clients_are_refused(auth_nats: AuthNatsServer) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(auth_nats.url, allow_reconnect=False, connect_timeout=2)


@pytest.mark.asyncio
async def test_a_producer_publishes_events_and_nothing_under_blobflow(
    auth_nats: AuthNatsServer,
) -> None:
    errors: list[str] = []
    async with (
        connected(auth_nats, "blobflow", errors) as service,
        connected(auth_nats, "producer", errors) as producer,
    ):
        await ensure_streams(service.jetstream(), StreamNames())  # blobflow creates them
        control = await service.subscribe("blobflow.>")
        await service.flush()

        ack = await BlobflowClient(producer).publish_event("created", blob_id="b", user_id="u")
        assert ack
        with pytest.raises(TimeoutError):  # dropped by the server: nobody ever sees it
            await producer.request(REGISTER_SUBJECT, b'{"schemas": []}', timeout=0.5)
        await producer.publish(CHANGED_SUBJECT, b"")
        await producer.publish(cancel_subject("some-worker"), b"some-execution")
        await producer.publish("deltas.p.b", b"{}")
        await producer.subscribe("blobflow.>")
        refused = [
            f'{VIOLATION} for publish to "{REGISTER_SUBJECT}"',
            f'{VIOLATION} for publish to "{CHANGED_SUBJECT}"',
            f'{VIOLATION} for publish to "blobflow.cancel.some-worker"',
            f'{VIOLATION} for publish to "deltas.p.b"',
            f'{VIOLATION} for subscription to "blobflow.>"',
        ]
        await eventually(lambda: _said(errors, refused), timeout_s=5)
        await service.flush()
        assert control.pending_msgs == 0
        stored = await service.jetstream().stream_info("BLOBS")
        assert stored.state.messages == 1


@pytest.mark.asyncio
async def test_blobflow_with_its_user_runs_and_each_client_does_its_part(
    auth_nats: AuthNatsServer,
    mongodb: MongoDeployment,
    mongo_db_name: str,
    downstream: Downstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole service on its own user: streams, consumer, registration, events, deltas."""
    caplog.set_level(logging.WARNING, "blobflow")
    script_studio(downstream)
    servers = Servers(auth_nats, mongodb, mongo_db_name, "unused", downstream)
    settings = servers.settings(nats_user="blobflow", nats_password=PASSWORDS["blobflow"])
    binding: dict[str, Any] = {
        "workflow_id": "blob_processing_workflow",
        "triggers": [{"event": "onCreate", "conditions": [POEM]}],
    }
    poet = {"provider": {"id": "poet", "name": "Poet"}, "workflows": [binding]}
    errors: list[str] = []
    async with (
        start(settings, asyncio.Event(), StreamNames()) as service,
        connected(auth_nats, "registrar", errors) as registrar,
        connected(auth_nats, "consumer", errors) as consumer,
        connected(auth_nats, "producer", errors) as producer,
    ):
        refused = await BlobflowClient(registrar).register({"providers": [poet]})
        assert refused["errors"][0]["kind"] == "auth"  # NATS let it through; blobflow did not
        reply = await BlobflowClient(registrar, token=ADMIN).register({"providers": [poet]})
        assert reply["ok"] is True, reply
        assert "poet" in service.engine.catalog.providers

        async with BlobflowClient(consumer).deltas(provider_id="poet") as feed:
            await BlobflowClient(producer).publish_event(
                "created", blob_id="poem-1", user_id="u", metadata={"type": "poem"}
            )
            delta = await asyncio.wait_for(anext(feed), timeout=20)
        assert (delta["provider_id"], delta["blob_id"]) == ("poet", "poem-1")

        # A registrar registers, and does nothing else under blobflow.>.
        subject = cancel_subject(service.engine.worker_id)
        with pytest.raises((TimeoutError, NoRespondersError)):
            await registrar.request(subject, b"x", timeout=0.5)
        violation = [f'{VIOLATION} for publish to "{subject}"']
        await eventually(lambda: _said(errors, violation), timeout_s=5)
    assert errors == violation
    # blobflow itself was refused nothing (the connection logs what the server says).
    assert VIOLATION not in caplog.text.lower()


async def _said(errors: list[str], expected: list[str]) -> bool:
    return all(line in errors for line in expected)
