"""Bearer tokens: JWTs carrying who the caller is and which account they act in.

Two kinds are accepted side by side:
- HS256 tokens signed with the local secret (``TokenCodec``): ``resolutionflow token``,
  the page's local sign-in, tests and benchmarks;
- RS256 / ES256 tokens of an identity provider (``JwksKeys``), verified with the public
  keys it publishes at its JWKS URL, with issuer and audience checks.
The token header's ``alg`` picks the kind, and each kind is decoded with its one
algorithm family only, so ``alg: none`` and an HS256 token "signed" with a provider's
public key never verify.

Errors stay vague ("invalid token") except expiry, which a client can act on by getting
a new token; saying which check failed would only help someone forging tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from server.domain.types import Caller, Role
from server.errors import Unauthenticated, Unavailable
from server.settings import ConfigError, Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
PROVIDER_ALGORITHMS = ("RS256", "ES256")
REQUIRED_CLAIMS = ("sub", "account", "role", "exp")
MAX_CLAIM = 128
MAX_HEADER = 4096
# While the provider's keys cannot be fetched, another attempt at most this often.
RETRY_SECONDS = 1.0
# Strongest first: a provider listing several roles of a user grants the strongest.
ROLE_ORDER = (Role.ADMIN, Role.ENGINEER, Role.TECHNICIAN)


class TokenCodec:
    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret

    def issue(
        self, *, account: str, user: str, role: Role, name: str = "", ttl_seconds: int = 3600
    ) -> str:
        return self.mint(account=account, user=user, role=role, name=name, ttl_seconds=ttl_seconds)[
            0
        ]

    def mint(
        self, *, account: str, user: str, role: Role, name: str = "", ttl_seconds: int = 3600
    ) -> tuple[str, int]:
        """A signed token and its expiry (seconds since the epoch)."""
        now = int(time.time())
        claims = {
            "sub": user,
            "account": account,
            "role": role.value,
            "name": name or user,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), now + ttl_seconds

    def verify(self, token: str) -> Caller:
        try:
            # The algorithm list is pinned: "none" and key-confusion tokens are refused.
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError:
            # Deliberately vague: which check failed would only help someone forging tokens.
            raise Unauthenticated("invalid token") from None
        return caller_from(claims, ClaimNames())


# How long a token of the page's local sign-in lasts: a working day.
LOCAL_TOKEN_TTL_SECONDS = 8 * 3600


class LocalSignIn:
    """The page's local sign-in (``resolutionflow serve``): tokens of the server's own codec.

    The gateway offers ``POST /local/token`` only when given one of these, and holds no
    key and no role list itself: the role is checked here. Admin tokens only with
    ``allow_admin`` (``serve --local-admin``), so a page on this machine cannot make itself
    an admin of every account. Raises ``ValueError`` for an unknown role (a 400 naming
    it) and ``PermissionError`` for a role not handed out here (a 403).
    """

    def __init__(
        self, codec: TokenCodec, *, allow_admin: bool, ttl_seconds: int = LOCAL_TOKEN_TTL_SECONDS
    ) -> None:
        self._codec = codec
        self._roles = tuple(r for r in Role if allow_admin or r is not Role.ADMIN)
        self._ttl = ttl_seconds

    def __call__(self, *, account: str, user: str, role: str, name: str) -> tuple[str, int]:
        if role not in {r.value for r in Role}:
            raise ValueError(f"one of {', '.join(r.value for r in self._roles)}")
        if Role(role) not in self._roles:
            raise PermissionError(
                "local sign-in does not hand out admin tokens; start `resolutionflow serve "
                "--local-admin` to allow it, or use `resolutionflow token --role admin`"
            )
        return self._codec.mint(
            account=account, user=user, role=Role(role), name=name, ttl_seconds=self._ttl
        )


@dataclass(frozen=True)
class ClaimNames:
    """Where the account, role and display name are in a token's claims. Identity
    providers name them as their administrator chose (often namespaced URLs, e.g.
    ``https://rf.example.com/account``); a dotted path (``realm_access.roles``) reaches
    into nested objects when no claim has the exact name."""

    account: str = "account"
    role: str = "role"
    name: str = "name"


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _role(value: Any) -> Role:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        for role in ROLE_ORDER:
            if role.value in value:
                return role
    raise Unauthenticated("invalid token: unknown role")


def caller_from(claims: Mapping[str, Any], names: ClaimNames) -> Caller:
    """The caller a verified token's claims describe (``sub`` is always the user id)."""
    role = _role(_claim(claims, names.role))
    user, account = claims.get("sub"), _claim(claims, names.account)
    for claim, value in (("sub", user), (names.account, account)):
        if not isinstance(value, str) or not value or len(value) > MAX_CLAIM:
            raise Unauthenticated(f"invalid token: claim {claim!r} must be a short string")
    assert isinstance(user, str) and isinstance(account, str)
    name = _claim(claims, names.name)
    return Caller(
        user_id=user,
        account_id=account,
        role=role,
        name=name[:MAX_CLAIM] if isinstance(name, str) and name else user,
        expires_at=float(claims["exp"]),
    )


class JwksKeys:
    """An identity provider's signing keys, fetched from its JWKS URL and kept in memory.

    PyJWT's ``PyJWKClient`` does the HTTP fetch (timeout, no redirects) and ``PyJWKSet``
    the parsing; the caching around them is ours, because ``PyJWKClient`` is blocking
    (urllib) and its own cache sits behind a thread lock. Here the key for a token is a
    dict lookup on the event loop; only a fetch goes to a thread, and concurrent callers
    share the one fetch in flight. Rotation: a token with a ``kid`` not in the set makes
    the set be fetched again, at most once per ``min_refetch_seconds`` (forged ``kid``s
    cannot turn into a flood of requests to the provider); the whole set is replaced, so
    a key the provider removed stops verifying. If the provider is unreachable, the last
    set keeps serving; with no set at all, callers get UNAVAILABLE after ``timeout``.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_seconds: float = 300,
        min_refetch_seconds: float = 30,
        timeout: float = 5,
    ) -> None:
        self.url = url
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout)
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0  # monotonic time of the last good fetch
        self._tried_at = -float("inf")  # ... and of the last attempt, good or not
        self._error = ""
        self._inflight: asyncio.Future[None] | None = None

    async def key(self, kid: Any) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid or len(kid) > MAX_CLAIM:
            raise Unauthenticated("invalid token")  # no fetch for what no key can match
        now = time.monotonic()
        if self._keys is None:
            # Nothing to serve: try again, but not more than once a second while failing.
            if now - self._tried_at >= min(RETRY_SECONDS, self.min_refetch_seconds):
                await self._refresh()
        elif kid not in self._keys and now - self._tried_at >= self.min_refetch_seconds:
            await self._refresh()  # perhaps a key the provider has just rotated in
        elif now - self._fetched_at >= self.cache_seconds and now - self._tried_at >= min(
            RETRY_SECONDS, self.cache_seconds
        ):
            # Stale: refresh in the background and serve the set we have meanwhile, so a
            # slow or unreachable provider does not delay calls whose key is known.
            self._start_fetch()
        if self._keys is None:
            raise Unavailable(
                "cannot verify the token: the identity provider's signing keys could not "
                f"be fetched ({self._error}); try again shortly"
            )
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("invalid token")
        return found

    def _start_fetch(self) -> asyncio.Future[None]:
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
        return self._inflight

    async def _refresh(self) -> None:
        # Shielded: one caller going away must not cancel the fetch the others wait on.
        await asyncio.shield(self._start_fetch())

    async def _fetch(self) -> None:
        self._tried_at = time.monotonic()
        try:
            data = await asyncio.to_thread(self._client.fetch_data)
            keys = {
                k.key_id: k
                for k in jwt.PyJWKSet.from_dict(data).keys
                if k.key_id and k.public_key_use in ("sig", None)
            }
        except (jwt.PyJWKClientError, jwt.PyJWKSetError, ValueError) as e:
            self._error = _reason(e)
            log.warning("fetching the JWKS from %s failed: %s", self.url, self._error)
        else:
            self._keys, self._fetched_at, self._error = keys, time.monotonic(), ""
        finally:
            self._inflight = None


def _reason(error: Exception) -> str:
    """The short cause of a failed fetch (e.g. "[Errno 111] Connection refused")."""
    cause = error.__cause__
    reason = getattr(cause, "reason", None)
    return str(reason if reason is not None else cause or error)


class TokenVerifier:
    """Every incoming token: local HS256 ones by the codec, provider ones by their JWKS.

    Clients present the same token on call after call (until it expires), and checking a
    signature is most of what an RPC costs before its own work: a token verified once is
    remembered until it expires, and on each return only its expiry is checked (and, for
    a provider token, that the key it was verified with is still the provider's key for
    its ``kid``: a key the provider removed stops verifying its tokens at once, cached or
    not, as soon as the key set is fetched again). A refused token is not kept, and the
    table starts over when full rather than growing without bound.
    """

    def __init__(
        self,
        codec: TokenCodec | None,
        keys: JwksKeys | None = None,
        *,
        issuer: str = "",
        audience: str = "",
        claims: ClaimNames | None = None,
        capacity: int = 100_000,
    ) -> None:
        if keys is not None and not (issuer and audience):
            raise ValueError("identity-provider tokens need both an issuer and an audience")
        self.codec = codec
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.claims = claims or ClaimNames()
        self.capacity = capacity
        # token -> (its caller, the provider key it was verified with; None: a local token)
        self._known: dict[str, tuple[Caller, jwt.PyJWK | None]] = {}

    async def verify(self, token: str) -> Caller:
        known = self._known.get(token)
        if known is not None:
            caller, key = known
            if caller.expires_at is not None and caller.expires_at <= time.time():
                del self._known[token]
                raise Unauthenticated("token expired")
            if key is None:
                return caller
            assert self.keys is not None
            if await self.keys.key(key.key_id) is key:
                return caller
            del self._known[token]  # the key set was fetched again since: verify anew
        caller, key = await self._verify(token)
        if len(self._known) >= self.capacity:
            self._known.clear()
        self._known[token] = (caller, key)
        return caller

    async def _verify(self, token: str) -> tuple[Caller, jwt.PyJWK | None]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        alg = header.get("alg")
        if alg == ALGORITHM and self.codec is not None:
            return self.codec.verify(token), None
        if alg not in PROVIDER_ALGORITHMS or self.keys is None:
            raise Unauthenticated("invalid token")
        key = await self.keys.key(header.get("kid"))
        if key.algorithm_name != alg:
            raise Unauthenticated("invalid token")  # e.g. ES256 claimed over an RSA key
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["sub", "exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        return caller_from(claims, self.claims), key


def verifier_from(settings: Settings, codec: TokenCodec) -> TokenVerifier:
    """The server's verifier: local tokens always, provider tokens when RF_JWKS_URL is set."""
    if not settings.jwks_url:
        return TokenVerifier(codec)
    if not (settings.jwt_issuer and settings.jwt_audience):
        raise ConfigError(
            "RF_JWKS_URL is set, so RF_JWT_ISSUER and RF_JWT_AUDIENCE must be set too: "
            "without them any token of that identity provider, issued for any "
            "application, would be accepted"
        )
    keys = JwksKeys(
        settings.jwks_url,
        cache_seconds=settings.jwks_cache_seconds,
        min_refetch_seconds=settings.jwks_min_refetch_seconds,
        timeout=settings.jwks_timeout_seconds,
    )
    return TokenVerifier(
        codec,
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        claims=ClaimNames(
            account=settings.jwt_account_claim,
            role=settings.jwt_role_claim,
            name=settings.jwt_name_claim,
        ),
    )


def bearer_token(header: str | None) -> str:
    if not header:
        raise Unauthenticated("missing authorization: send 'authorization: Bearer <token>'")
    if len(header) > MAX_HEADER:
        raise Unauthenticated("invalid token: too large")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("malformed authorization: expected 'Bearer <token>'")
    return token.strip()
