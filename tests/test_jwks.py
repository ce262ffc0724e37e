"""Identity-provider tokens (RS256 / ES256) verified by the provider's JWKS, over gRPC.

The identity provider is the one outside thing stubbed here: a small real HTTP server in
this process serves its JWKS (a JSON document that the test changes to rotate keys, and
can make hang or take down); keys are real RSA and EC keys made with ``cryptography``.
Everything else is the real server. Verification does not touch the database, so these
run on an SQLite file only.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from resolutionflow.v1 import escalation_pb2 as esc
from resolutionflow.v1 import handoff_pb2 as pb

from server.auth import JwksKeys
from server.errors import Unauthenticated, Unavailable
from server.runtime import ServerRuntime
from server.settings import Settings
from tests.support import JWT_SECRET, Client, token, wait_until, within

ISSUER = "https://idp.example.test/realms/help"
AUDIENCE = "resolutionflow"
# Claim names as a provider's administrator might set them: a namespaced URL, a dotted
# path into a nested object, and a standard OIDC claim.
ACCOUNT_CLAIM = "https://rf.example.test/account"
ROLE_CLAIM = "realm_access.roles"
NAME_CLAIM = "given_name"


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @classmethod
    def rsa(cls) -> SigningKey:
        return cls(f"rsa-{uuid.uuid4().hex[:8]}", "RS256", rsa.generate_private_key(65537, 2048))

    @classmethod
    def ec(cls) -> SigningKey:
        return cls(f"ec-{uuid.uuid4().hex[:8]}", "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        )
        value: dict[str, Any] = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**value, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def sign(self, claims: dict[str, Any], kid: str | None = None, alg: str | None = None) -> str:
        return jwt.encode(
            claims, self.private, algorithm=alg or self.alg, headers={"kid": kid or self.kid}
        )


@dataclass
class FakeIdentityProvider:
    """Serves ``jwks`` at /jwks.json; counts requests; ``hang`` holds answers back."""

    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    requests: int = 0
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    def publish(self, *keys: SigningKey) -> None:
        self.jwks = {"keys": [k.jwk() for k in keys]}

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def start(self) -> None:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                idp.requests += 1
                if idp.hang.is_set():
                    idp.release.wait(30)
                body = json.dumps(idp.jwks).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting (the timeout tests)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.release.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[FakeIdentityProvider]:
    provider = FakeIdentityProvider()
    provider.start()
    yield provider
    provider.stop()


def provider_settings(url: str, tmp: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{tmp / 'rf.db'}",
        "jwt_secret": SecretStr(JWT_SECRET),
        "var_dir": tmp,
        "grpc_addr": "127.0.0.1:0",
        "shutdown_grace_seconds": 0,
        "jwks_url": url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwt_account_claim": ACCOUNT_CLAIM,
        "jwt_role_claim": ROLE_CLAIM,
        "jwt_name_claim": NAME_CLAIM,
    }
    return Settings(**{**values, **extra})


@pytest.fixture(scope="module")
async def idp_server(
    idp: FakeIdentityProvider, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerRuntime]:
    """A server trusting ``idp``; an unknown kid may refetch at once (rotation tests)."""
    settings = provider_settings(
        idp.url, tmp_path_factory.mktemp("jwks"), jwks_min_refetch_seconds=0
    )
    runtime = ServerRuntime(settings)
    await runtime.start()
    yield runtime
    await runtime.stop(0)


@pytest.fixture(scope="module")
async def idp_channel(idp_server: ServerRuntime) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{idp_server.port}") as channel:
        yield channel


@pytest.fixture
def account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


def claims(account: str, **changes: Any) -> dict[str, Any]:
    """An engineer as the provider describes them; a change to None drops that claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": ISSUER,
        "aud": [AUDIENCE, "account"],
        "sub": "f3b9c2d0-erin",
        ACCOUNT_CLAIM: account,
        "realm_access": {"roles": ["offline_access", "engineer"]},
        NAME_CLAIM: "Erin",
        "iat": now,
        "exp": now + 300,
    }
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


async def list_escalations(channel: grpc.aio.Channel, bearer: str) -> Any:
    return await Client(channel, bearer, "", "").call(
        "escalations", "ListEscalations", esc.ListEscalationsRequest()
    )


async def refused(
    channel: grpc.aio.Channel, bearer: str, code: grpc.StatusCode = grpc.StatusCode.UNAUTHENTICATED
) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await list_escalations(channel, bearer)
    assert info.value.code() == code, info.value.details()
    return info.value.details() or ""


@pytest.mark.parametrize("make_key", [SigningKey.rsa, SigningKey.ec], ids=["RS256", "ES256"])
async def test_provider_tokens_are_accepted_with_the_configured_claims(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str, make_key: Any
) -> None:
    key = make_key()
    idp.publish(key)
    assert (await list_escalations(idp_channel, key.sign(claims(account)))).sequence == 0
    # The caller is who the claims say: a technician of that account, by their name.
    technician = key.sign(
        claims(account, sub="tina-id", realm_access={"roles": ["technician"]}, given_name="Tina")
    )
    created = await Client(idp_channel, technician, account, "tina-id").create()
    assert (created.account_id, created.created_by.id, created.created_by.name) == (
        account,
        "tina-id",
        "Tina",
    )
    queue = await list_escalations(idp_channel, key.sign(claims(account)))
    assert [h.id for h in queue.escalations] == [created.id]


async def test_local_tokens_still_work_beside_the_provider(
    idp_channel: grpc.aio.Channel, account: str
) -> None:
    local = token(account, "erin", "engineer")
    assert (await list_escalations(idp_channel, local)).sequence == 0


async def test_wrong_issuer_audience_or_claims_are_refused(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str
) -> None:
    key = SigningKey.rsa()
    idp.publish(key)
    for bad in (
        claims(account, iss="https://evil.example.test/"),
        claims(account, iss=None),
        claims(account, aud="another-app"),
        claims(account, aud=None),
        claims(account, **{ACCOUNT_CLAIM: None}),
        claims(account, realm_access={"roles": ["offline_access"]}),
        claims(account, sub=None),
    ):
        assert (await refused(idp_channel, key.sign(bad))).startswith("invalid token"), bad
    expired = claims(account, iat=int(time.time()) - 600, exp=int(time.time()) - 60)
    assert await refused(idp_channel, key.sign(expired)) == "token expired"


async def test_forged_tokens_are_refused(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str
) -> None:
    key, stranger = SigningKey.rsa(), SigningKey.rsa()
    idp.publish(key)
    good = claims(account)
    forged = [
        stranger.sign(good),  # an unknown kid
        stranger.sign(good, kid=key.kid),  # a known kid, the wrong key
        jwt.encode(good, "", algorithm="none", headers={"kid": key.kid}),
        # HS256 "signed" with the provider's public key, which anyone can download.
        _hs256_with(good, key.public_pem(), key.kid),
        # ES256 claimed over the RSA key's kid, signed with some EC key.
        SigningKey.ec().sign(good, kid=key.kid),
        # The right key, an algorithm outside RS256/ES256.
        key.sign(good, alg="RS512"),
        # No kid, or one that is not a string.
        jwt.encode(good, key.private, algorithm="RS256"),
        _with_header(key.sign(good), {"alg": "RS256", "kid": ["a", "b"]}),
    ]
    for bearer in forged:
        assert await refused(idp_channel, bearer) == "invalid token"
    # The size cap still holds for provider tokens.
    huge = key.sign(claims(account, given_name="x" * 5000))
    assert "too large" in await refused(idp_channel, huge)


def _with_header(token: str, header: dict[str, Any]) -> str:
    """``token`` with its header replaced (PyJWT would not encode such a header)."""
    import base64

    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return encoded + token[token.index(".") :]


def _hs256_with(payload: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 token whose HMAC key is ``secret`` (PyJWT refuses PEM keys for HMAC, so
    the signature is made by hand, as an attacker would)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(payload).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


async def test_key_rotation(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str
) -> None:
    old, new = SigningKey.rsa(), SigningKey.ec()
    idp.publish(old)
    assert await list_escalations(idp_channel, old.sign(claims(account)))
    # The provider adds the new key beside the old one, then signs with it.
    idp.publish(old, new)
    assert await list_escalations(idp_channel, new.sign(claims(account)))
    assert await list_escalations(idp_channel, old.sign(claims(account)))
    # The old key is retired: once the set is fetched again, its tokens are refused.
    idp.publish(new)
    newest = SigningKey.rsa()
    idp.publish(new, newest)
    assert await list_escalations(idp_channel, newest.sign(claims(account)))  # refetch
    assert await refused(idp_channel, old.sign(claims(account))) == "invalid token"
    assert await list_escalations(idp_channel, new.sign(claims(account)))


async def test_a_remembered_token_stops_verifying_once_its_key_is_retired(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str
) -> None:
    """The server remembers verified tokens; a retired key still ends its tokens."""
    old, new = SigningKey.rsa(), SigningKey.rsa()
    idp.publish(old)
    kept = old.sign(claims(account))
    assert await list_escalations(idp_channel, kept)
    assert await list_escalations(idp_channel, kept)  # the same token again: remembered
    idp.publish(new)
    assert await list_escalations(idp_channel, new.sign(claims(account)))  # set refetched
    assert await refused(idp_channel, kept) == "invalid token"


async def test_unknown_kids_refetch_at_most_once_per_interval(
    idp: FakeIdentityProvider, account: str
) -> None:
    key = SigningKey.rsa()
    idp.publish(key)
    keys = JwksKeys(idp.url, min_refetch_seconds=1, timeout=2)
    assert (await keys.key(key.kid)).key_id == key.kid
    fetched = time.monotonic()
    before = idp.requests
    # Right after a fetch, an unknown kid fetches nothing.
    with pytest.raises(Unauthenticated):
        await keys.key("forged-early")
    assert idp.requests == before
    await wait_until(lambda: time.monotonic() - fetched > 1, what="the interval to pass")
    # A burst of tokens with made-up kids, all at once: one refetch, shared.
    results = await asyncio.gather(
        *(keys.key(f"forged-{n}") for n in range(50)), return_exceptions=True
    )
    assert all(isinstance(r, Unauthenticated) for r in results), results
    assert idp.requests - before == 1
    for n in range(20):
        with pytest.raises(Unauthenticated):
            await keys.key(f"later-{n}")
    assert idp.requests - before == 1
    assert (await keys.key(key.kid)).key_id == key.kid  # known keys keep working


async def test_provider_down_is_unavailable_quickly_and_cached_keys_keep_serving(
    idp: FakeIdentityProvider, tmp_path: Path, account: str
) -> None:
    # Nothing listens on this port: connection refused.
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{closed.server_address[1]}/jwks.json"
    closed.server_close()
    key = SigningKey.rsa()
    runtime = ServerRuntime(provider_settings(url, tmp_path, jwks_timeout_seconds=1))
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
            message = await within(
                10,
                refused(channel, key.sign(claims(account)), grpc.StatusCode.UNAVAILABLE),
                "UNAVAILABLE with the provider down",
            )
            assert "identity provider" in message and "refused" in message.lower(), message
    finally:
        await runtime.stop(0)

    # A provider that accepts the connection and never answers: the timeout ends it.
    idp.publish(key)
    keys = JwksKeys(idp.url, timeout=1, cache_seconds=0.001)
    assert (await keys.key(key.kid)).key_id == key.kid
    idp.hang.set()
    try:
        # The cached set is stale: it keeps serving while the refresh hangs in the background.
        served = await within(10, keys.key(key.kid), "the stale key while the refresh hangs")
        assert served.key_id == key.kid
        cold = JwksKeys(idp.url, timeout=1)
        with pytest.raises(Unavailable, match="identity provider"):
            await asyncio.wait_for(cold.key(key.kid), 15)
    finally:
        idp.hang.clear()
        idp.release.set()
        idp.release = threading.Event()


async def test_a_provider_token_ends_its_stream_at_expiry(
    idp: FakeIdentityProvider, idp_channel: grpc.aio.Channel, account: str
) -> None:
    key = SigningKey.ec()
    idp.publish(key)
    now = int(time.time())
    bearer = key.sign(claims(account, exp=now + 2))
    call = Client(idp_channel, bearer, account, "").escalations.StreamEscalations(
        esc.StreamEscalationsRequest(), metadata=(("authorization", f"Bearer {bearer}"),)
    )
    assert (await asyncio.wait_for(call.read(), 15)).type == pb.EVENT_TYPE_SNAPSHOT
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await asyncio.wait_for(call.read(), 15)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details() == "token expired"


def test_provider_settings_need_issuer_and_audience(tmp_path: Path) -> None:
    from server.settings import ConfigError

    with pytest.raises(ConfigError, match="RF_JWT_ISSUER and RF_JWT_AUDIENCE"):
        ServerRuntime(provider_settings("http://127.0.0.1:1/jwks.json", tmp_path, jwt_audience=""))
