"""A running service with its HTTP API, and a small client to call it as different users."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from blobflow.app import Service, start
from blobflow.config import Settings, load_settings
from blobflow.core.subjects import StreamNames
from tests.servers import Downstream, MongoDeployment, NatsServer
from tests.support import ROOT

ADMIN = "admin-token"
ALICE = "alice-token"
BOB = "bob-token"
TOKENS = f"{ADMIN}=root:admin,{ALICE}=alice,{BOB}=bob"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]
    text: str


@dataclass(slots=True)
class Api:
    service: Service
    names: StreamNames
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = ADMIN,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.url + path, json=json, data=data, headers=sent, params=params
        ) as response:
            text = await response.text()
            is_json = response.content_type == "application/json"
            body = await response.json() if is_json else None
            return Reply(response.status, body, response.headers, text)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("POST", path, **kwargs)


@dataclass(frozen=True, slots=True)
class Servers:
    """One test's servers and stream names: what `serve` starts the service on."""

    nats: NatsServer
    mongodb: MongoDeployment
    database: str
    prefix: str
    downstream: Downstream

    @property
    def names(self) -> StreamNames:
        return StreamNames.prefixed(self.prefix)

    def settings(self, **env: str) -> Settings:
        """What `blobflow serve` would read from this environment (`env` overrides it:
        `max_concurrency="1"` sets `BLOBFLOW_MAX_CONCURRENCY`)."""
        return load_settings(
            {
                "BLOBFLOW_NATS_URL": self.nats.url,
                "BLOBFLOW_MONGODB_URL": self.mongodb.url,
                "BLOBFLOW_MONGODB_DATABASE": self.database,
                "BLOBFLOW_DEFINITIONS": str(ROOT),
                "BLOBFLOW_HTTP_PORT": "0",
                "BLOBFLOW_SERVICE_STUDIO_URL": self.downstream.url,
                "BLOBFLOW_SERVICE_CORE_URL": self.downstream.url,
                "BLOBFLOW_LEASE_MS": "2000",
                "BLOBFLOW_API_TOKENS": TOKENS,
                "BLOBFLOW_RATE_LIMIT": "1000",
                "BLOBFLOW_RATE_BURST": "1000",
                **{f"BLOBFLOW_{key.upper()}": value for key, value in env.items()},
            }
        )

    @asynccontextmanager
    async def serve(self, **env: str) -> AsyncIterator[Api]:
        """The service started as `blobflow serve` starts it (`blobflow.app.start`)."""
        async with (
            start(self.settings(**env), asyncio.Event(), self.names) as service,
            aiohttp.ClientSession() as http,
        ):
            yield Api(service, self.names, http)
