"""Shared fixtures: a fresh database per backend, a real gRPC server, real clients.

Every integration test runs twice, on SQLite and on PostgreSQL. Each test gets its own
account id, so tests sharing one server never see each other's data. Under pytest-xdist
each worker process has its own session: its own databases (uniquely named), its own
server and gateway on free ports, so workers share nothing but the PostgreSQL server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from pydantic import SecretStr
from sqlalchemy import inspect

from server.db.database import Database
from server.db.schema import WebhookEndpointRecord
from server.domain.types import Role
from server.runtime import ServerRuntime
from server.settings import Settings
from server.webhooks import store
from tests.pg import fresh_database
from tests.support import JWT_SECRET, Client, token

# The gateway (``gateway``, ``http``) and browser (``chromium``, ``browser``) fixtures live
# beside their helpers; registered here, every test module can ask for them by name.
pytest_plugins = ["tests.gateway_support", "tests.browser_support"]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keeps ``xdist_group`` working under ``--dist loadgroup`` on pytest 9.2.

    A worker tells the scheduler an item's group by appending ``@group`` to its node id.
    pytest-xdist 3.8 sets the string attribute that pytest 9.2 no longer reads its node
    ids from (pytest-dev/pytest-xdist#1386), so every group was silently spread over all
    the workers: the serial group's timing tests ran beside the benchmark and each other.
    This sets the id where pytest 9.2 keeps it, and leaves alone an id xdist did suffix.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = type(item._id).parse(item.nodeid + suffix)


TEST_LIMITS: dict[str, Any] = {
    "creates_per_minute": 1e6,
    "create_burst": 100_000,
    "max_streams_per_user": 10_000,
}

# Every server of a test database shares one webhook policy (any of them may claim an
# endpoint): the tests' receivers are plain http on loopback, and retries come fast.
TEST_WEBHOOKS: dict[str, Any] = {
    "webhook_allow_http": True,
    "webhook_allowed_networks": "127.0.0.0/8",
    "webhook_first_retry_seconds": 0.2,
    "webhook_max_retry_seconds": 0.5,
    "webhook_poll_seconds": 0.25,
    "webhook_lease_seconds": 5,
    "webhook_timeout_seconds": 5,
}


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'rf.db'}"
        return
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=database_url,
        jwt_secret=SecretStr(JWT_SECRET),
        var_dir=tmp_path_factory.mktemp("var"),
        grpc_addr="127.0.0.1:0",
        shutdown_grace_seconds=0,
        # Tests drive load through few users; the limits have tests of their own.
        **TEST_LIMITS,
        **TEST_WEBHOOKS,
    )


@pytest.fixture
def own_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The session's settings on a database of the test's own, for a test whose server must
    not meet what other tests' servers left in the shared one (pending assessments that
    any server may claim and send to this test's fake provider, say)."""
    if settings.database_url.startswith("sqlite"):
        own = f"sqlite+aiosqlite:///{tmp_path / 'own.db'}"
        yield settings.model_copy(update={"database_url": own})
        return
    with fresh_database() as url:
        yield settings.model_copy(update={"database_url": url})


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[ServerRuntime]:
    runtime = ServerRuntime(settings)
    await runtime.start()
    yield runtime
    await runtime.stop(0)


@pytest.fixture(scope="session")
async def channel(server: ServerRuntime) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


TABLE = WebhookEndpointRecord.__tablename__


@pytest.fixture(autouse=True)
async def _webhook_endpoints_end_with_their_test(
    request: pytest.FixtureRequest,
) -> AsyncIterator[None]:
    """Deletes, after a test on a database of the session, its account's webhook endpoints.

    Left behind, they would outlive the test: every server of that database keeps polling
    each one (every webhook_poll_seconds) and retrying each pending delivery to a receiver
    that is gone (every webhook_max_retry_seconds) for the rest of the session, about 0.4
    of a core per server once the webhook modules have run.
    """
    names = request.fixturenames
    if "database_url" not in names or "account" not in names:
        yield
        return
    account: str = request.getfixturevalue("account")  # gone by this fixture's teardown
    yield
    # The test's database (a module may give itself one: its own ``settings``).
    if "settings" in names:
        url: str = request.getfixturevalue("settings").database_url
    else:
        url = request.getfixturevalue("database_url")
    server: ServerRuntime | None = request.getfixturevalue("server") if "server" in names else None
    if server is not None and server.settings.database_url == url:
        await _delete_endpoints(server.db, account)
        return
    db = Database(url)
    try:
        async with db.read() as s:
            # A database no server has migrated yet has no endpoints (nor their table).
            if not await s.run_sync(lambda s: inspect(s.connection()).has_table(TABLE)):
                return
        await _delete_endpoints(db, account)
    finally:
        await db.dispose()


async def _delete_endpoints(db: Database, account: str) -> None:
    async with db.read() as s:
        left = [e.id for e in await store.list_endpoints(s, account)]
    if left:
        async with db.write() as s:
            for endpoint_id in left:
                await store.delete_endpoint(s, account, endpoint_id)


@pytest.fixture
def client_for(channel: grpc.aio.Channel, account: str) -> Callable[..., Client]:
    """``client_for(role, user=..., account=...)``: a client acting as that user."""

    def make(
        role: Role | str, user: str | None = None, acct: str | None = None, name: str = ""
    ) -> Client:
        role = Role(role)
        user = user or f"{role.value}-{uuid.uuid4().hex[:6]}"
        acct = acct or account
        return Client(channel, token(acct, user, role, name=name or user.title()), acct, user)

    return make


@pytest.fixture
def technician(client_for: Callable[..., Client]) -> Client:
    return client_for(Role.TECHNICIAN, "tech-1", name="Tina Tech")


@pytest.fixture
def engineer(client_for: Callable[..., Client]) -> Client:
    return client_for(Role.ENGINEER, "eng-1", name="Erin Engineer")


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
