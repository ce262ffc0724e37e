"""How long a database session may wait, run and idle: plain values, shared by the
settings and the engine without importing either's dependencies."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PgBounds:
    """Seconds each PostgreSQL session may wait for a lock, run one statement, and sit
    idle inside a transaction (0 disables one, as in PostgreSQL)."""

    lock_timeout: float = 5
    statement_timeout: float = 30
    idle_in_transaction_timeout: float = 10

    def server_settings(self) -> dict[str, str]:
        return {
            "lock_timeout": ms(self.lock_timeout),
            "statement_timeout": ms(self.statement_timeout),
            "idle_in_transaction_session_timeout": ms(self.idle_in_transaction_timeout),
        }


def ms(seconds: float) -> str:
    return str(round(seconds * 1000))
