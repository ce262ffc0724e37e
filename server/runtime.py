"""One running server: database, core and gRPC server, started and stopped together."""

from __future__ import annotations

import logging

from server.api.app import NOT_SERVING, SERVICE_NAMES, SERVING, create_grpc_server
from server.auth import TokenCodec
from server.core import Core
from server.db.database import Database
from server.db.migrate import upgrade
from server.settings import Settings

log = logging.getLogger(__name__)


class ServerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.core = Core(self.db, settings)
        self.codec = TokenCodec(settings.resolved_jwt_secret())
        self.grpc, self._health = create_grpc_server(
            self.core, self.codec, max_request_bytes=settings.max_request_bytes
        )
        self.port = 0

    async def start(self, grpc_addr: str | None = None) -> int:
        """Migrate, bind and serve; returns the bound port (useful with port 0)."""
        await upgrade(self.settings.database_url)
        addr = grpc_addr or self.settings.grpc_addr
        self.port = self.grpc.add_insecure_port(addr)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {addr}")
        await self.grpc.start()
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, SERVING)
        log.info("gRPC server listening on %s (port %d)", addr, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, NOT_SERVING)
        await self.grpc.stop(self.settings.shutdown_grace_seconds if grace is None else grace)
        await self.db.dispose()

    async def wait(self) -> None:
        await self.grpc.wait_for_termination()
