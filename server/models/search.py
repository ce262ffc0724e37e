"""What fixed it last time: resolved escalations found by the database's own full-text
search (SQLite FTS5, PostgreSQL tsvector with a GIN index), per account.

A resolved escalation is indexed in the transaction that resolves it and dropped in the
one that reopens it, so the search never offers an open problem as a fix. The table is
created by the migration in each dialect's own DDL; it is not part of the ORM metadata.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from sqlalchemy import BigInteger, TextualSelect, column, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from server.db.schema import HANDOFFS
from server.domain.types import Handoff, Status
from server.models.records import to_domain

# Words carried into a query: enough to describe a problem, few enough to stay fast.
MAX_TERMS = 24
_WORD = re.compile(r"\w{3,}", re.UNICODE)
# Words that say nothing about a problem; PostgreSQL's english configuration drops these
# (and more) itself, SQLite's FTS5 does not.
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "have",
        "has",
        "had",
        "was",
        "were",
        "are",
        "but",
        "not",
        "you",
        "your",
        "its",
        "again",
        "into",
        "onto",
        "when",
        "then",
        "than",
        "there",
        "their",
        "they",
        "them",
        "our",
        "out",
        "all",
        "any",
        "can",
        "could",
        "does",
        "did",
        "doing",
        "done",
        "who",
        "what",
        "which",
        "while",
        "after",
        "before",
        "still",
        "just",
        "also",
        "very",
    ]
)


def _document(h: Handoff) -> str:
    steps = " ".join(f"{s.description} {s.outcome}" for s in h.steps_tried)
    return f"{h.problem_summary}\n{steps}\n{h.notes}\n{h.resolution_note}"


def _terms(query: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in _STOP:
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def _query_terms(h: Handoff) -> list[str]:
    return _terms(f"{h.problem_summary} {' '.join(s.description for s in h.steps_tried)}")


def shared_terms(h: Handoff, past: Handoff) -> int:
    """How many of the words ``h`` is searched by occur in ``past``'s indexed text: a
    search ranks any match, this says whether a match is more than one common word.
    Words are compared by their first five letters, a crude stem ("disconnects" and
    "disconnected" agree), close enough to what PostgreSQL's stemmer matched on."""
    words = {w[:5] for w in _WORD.findall(_document(past).lower())}
    return sum(1 for t in _query_terms(h) if t[:5] in words)


async def index_resolved(session: AsyncSession, h: Handoff) -> None:
    await forget(session, h.id)
    await index_many(session, [h])


async def index_many(session: AsyncSession, handoffs: list[Handoff]) -> None:
    """Index resolved escalations, several in one statement (the search benchmark loads
    its rows this way)."""
    await session.execute(
        text(
            "INSERT INTO resolved_search (handoff_id, account_id, body) "
            "VALUES (:id, :account, :body)"
        ),
        [{"id": h.id, "account": h.account_id, "body": _document(h)} for h in handoffs],
    )


async def forget(session: AsyncSession, handoff_id: str) -> None:
    await session.execute(
        text("DELETE FROM resolved_search WHERE handoff_id = :id"), {"id": handoff_id}
    )


async def similar_resolved(
    executor: AsyncSession | AsyncConnection, h: Handoff, limit: int = 3
) -> list[Handoff]:
    """The account's resolved escalations closest to ``h``'s problem, best first.

    One statement (the search and the rows it found), so it reads one consistent state
    by itself and needs no transaction around it (``Database.query``).
    """
    return (await similar_resolved_many(executor, [h], limit))[h.id]


async def similar_resolved_many(
    executor: AsyncSession | AsyncConnection, handoffs: Sequence[Handoff], limit: int = 3
) -> dict[str, list[Handoff]]:
    """``similar_resolved`` of each handoff, by handoff id: one statement for all of them
    on PostgreSQL (a lateral search per handoff), one each on SQLite (in-process)."""
    found: dict[str, list[Handoff]] = {h.id: [] for h in handoffs}
    asked = [(h, terms) for h in handoffs if (terms := _query_terms(h))]
    if not asked:
        return found
    dialect = (
        executor.get_bind().dialect if isinstance(executor, AsyncSession) else executor.dialect
    )
    if dialect.name == "sqlite":
        params: dict[str, object] = {"limit": limit}
        for n, (h, terms) in enumerate(asked, start=1):
            # Each term quoted: FTS5 syntax in a problem description is only words.
            params |= {
                f"q{n}": " OR ".join(f'"{t}"' for t in terms),
                f"account{n}": h.account_id,
                f"self{n}": h.id,
            }
        rows = await executor.execute(_similar_sqlite(len(asked)), params)
    else:
        rows = await executor.execute(
            _SIMILAR_POSTGRES,
            {
                "selves": [h.id for h, _ in asked],
                "accounts": [h.account_id for h, _ in asked],
                "queries": [" | ".join(terms) for _, terms in asked],
                "limit": limit,
            },
        )
    for row in rows:
        found[asked[row.n - 1][0].id].append(to_domain(row))
    return found


# The found rows' columns by name (a table's physical column order can differ from the
# model's after migrations), typed as the table's so they read as any handoff row does.
_ROW = ", ".join(f"h.{c.name}" for c in HANDOFFS.c)
_SIMILAR_POSTGRES = text(
    f"SELECT q.n, {_ROW} FROM unnest(CAST(:selves AS text[]), CAST(:accounts AS text[]),"
    " CAST(:queries AS text[])) WITH ORDINALITY AS q(self, account, query, n)"
    " CROSS JOIN LATERAL ("
    "SELECT handoff_id, ts_rank(tsv, tq) AS rank FROM resolved_search,"
    " to_tsquery('english', q.query) AS tq"
    " WHERE tsv @@ tq AND account_id = q.account AND handoff_id != q.self"
    " ORDER BY rank DESC, handoff_id LIMIT :limit"
    ") AS found JOIN handoffs AS h ON h.id = found.handoff_id"
    f" WHERE h.account_id = q.account AND h.status = '{Status.RESOLVED.value}'"
    " ORDER BY q.n, found.rank DESC, found.handoff_id"
).columns(column("n", BigInteger), *HANDOFFS.c)
# SQLite has no lateral join: one search per handoff, in one statement (its text, by the
# number of handoffs, is built once).
_SIMILAR_SQLITE_ONE = (
    "SELECT * FROM (SELECT {n} AS n, found.rank AS rank, {row} FROM ("
    "SELECT handoff_id, bm25(resolved_search) AS rank FROM resolved_search"
    " WHERE resolved_search MATCH :q{n} AND account_id = :account{n}"
    " AND handoff_id != :self{n} ORDER BY rank LIMIT :limit"
    ") AS found JOIN handoffs AS h ON h.id = found.handoff_id"
    " WHERE h.account_id = :account{n} AND h.status = '{resolved}')"
)


@functools.lru_cache(maxsize=64)
def _similar_sqlite(count: int) -> TextualSelect:
    searches = " UNION ALL ".join(
        _SIMILAR_SQLITE_ONE.format(n=n, row=_ROW, resolved=Status.RESOLVED.value)
        for n in range(1, count + 1)
    )
    return text(
        f"SELECT n, {', '.join(c.name for c in HANDOFFS.c)} FROM ({searches}) ORDER BY n, rank, id"
    ).columns(column("n", BigInteger), *HANDOFFS.c)
