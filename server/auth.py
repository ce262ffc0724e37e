"""Bearer tokens: HS256 JWTs carrying who the caller is and which account they act in."""

from __future__ import annotations

import time

import jwt

from server.domain.types import Caller, Role
from server.errors import Unauthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("sub", "account", "role", "exp")
MAX_CLAIM = 128
MAX_HEADER = 4096


class TokenCodec:
    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the JWT secret must be at least 32 characters")
        self._secret = secret

    def issue(
        self, *, account: str, user: str, role: Role, name: str = "", ttl_seconds: int = 3600
    ) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "account": account,
            "role": role.value,
            "name": name or user,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

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
        try:
            role = Role(claims["role"])
        except ValueError:
            raise Unauthenticated("invalid token: unknown role") from None
        user, account = claims["sub"], claims["account"]
        for claim, value in (("sub", user), ("account", account)):
            if not isinstance(value, str) or not value or len(value) > MAX_CLAIM:
                raise Unauthenticated(f"invalid token: claim {claim!r} must be a short string")
        name = claims.get("name")
        return Caller(
            user_id=user,
            account_id=account,
            role=role,
            name=name[:MAX_CLAIM] if isinstance(name, str) and name else user,
            expires_at=float(claims["exp"]),
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
