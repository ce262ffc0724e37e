"""Arguments of ``resolutionflow bench`` (stdlib only: the CLI imports this at start-up)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Starts the real stack as separate processes (resolutionflow server, and the gateway for
--transport sse) on a fresh SQLite file or the given --database-url, opens N subscribers
spread over A accounts in a load-generator process of its own, creates escalations
through CreateHandoff (each yields two events: CREATED, then ASSESSMENT_READY) and checks
every delivery. Then runs the ceiling (a bare grpc.aio server, or a bare FastAPI +
sse-starlette app, fanning pre-made bytes of the same events to the same subscribers) and,
with --idle-streams, the memory run. Prints one JSON object on stdout; exits 1 if any
event was lost, duplicated or out of order.

--mode idle: what idle costs. One server, --idle-streams idle engineer streams (default
one per account of --accounts); server CPU (cores) and database transactions/s with no
events, then with --rate events/s (default 20) over the accounts.
--mode writers: --writers concurrent creators (default 8,32,128) over --accounts, per
wake-up transport (--wakeup, default postgres,nats,none): creates/s and p99.
--mode search: fills one account with --resolved resolved escalations (bulk inserts, no
server) and times --queries lookups of the most similar ones (the context screen's and
the assessment's "what fixed it last time"): p50 and p99.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--mode",
        choices=("stream", "idle", "writers", "search"),
        default="stream",
        help="stream (deliveries, the default), idle (idle cost), writers (write path), "
        "search (the similar-fixes lookup)",
    )
    parser.add_argument(
        "--resolved",
        type=int,
        default=100_000,
        metavar="N",
        help="--mode search: resolved escalations in the measured account (default 100000)",
    )
    parser.add_argument(
        "--queries",
        type=int,
        default=500,
        metavar="Q",
        help="--mode search: lookups timed (default 500)",
    )
    parser.add_argument(
        "--wakeup",
        metavar="LIST",
        help="--mode idle/writers: RF_WAKEUP transports to measure, comma-separated "
        "(postgres, nats, none; NATS at RF_NATS_URL)",
    )
    parser.add_argument(
        "--writers", default="8,32,128", metavar="LIST", help="--mode writers: W values"
    )
    parser.add_argument(
        "--cost-seconds",
        type=float,
        default=20,
        metavar="SECONDS",
        help="--mode idle/writers: length of each measured window (default 20)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="resolutionflow server --workers N (N > 1 needs a PostgreSQL --database-url); "
        "server CPU is summed over its processes",
    )
    parser.add_argument("--transport", choices=("grpc", "sse"), default="grpc")
    parser.add_argument("--subscribers", "-n", type=int, default=100, metavar="N")
    parser.add_argument("--accounts", "-a", type=int, default=1, metavar="A")
    parser.add_argument(
        "--rate",
        type=float,
        default=0,
        metavar="R",
        help="events per second over all accounts (0, the default: as fast as possible)",
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="E",
        help="events to produce over all accounts (E/2 escalations); default: about "
        "200,000 deliveries' worth at rate 0",
    )
    parser.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="create for this long instead of a fixed count (default 20 s when --rate > 0)",
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=0,
        metavar="M",
        help="memory run: M idle streams of --transport (gRPC: on a fresh server and on the "
        "bare grpc.aio one; SSE: through a fresh gateway and on bare sse-starlette, RSS of "
        "the gateway)",
    )
    parser.add_argument(
        "--streams-per-channel",
        type=int,
        default=100,
        metavar="K",
        help="gRPC streams sharing one HTTP/2 connection (SSE: per HTTP client); default 100",
    )
    parser.add_argument(
        "--database-url",
        help="default: a fresh SQLite file in a temporary directory; a PostgreSQL URL whose "
        "database does not exist (or has no name) gets a database created and dropped",
    )
    parser.add_argument(
        "--assessment-delay",
        type=float,
        default=0,
        metavar="SECONDS",
        help="use an OpenAI-compatible fake provider that answers after this long",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "library"),
        default="raw",
        help="subscriber client: raw (lean HTTP/2 / HTTP/1.1 readers, the default) or "
        "library (grpc.aio / httpx; the load generator then saturates first)",
    )
    parser.add_argument("--create-via", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=8,
        help="CreateHandoff calls in flight at rate 0 (default 8)",
    )
    parser.add_argument(
        "--kill-server-after",
        type=float,
        default=0,
        metavar="SECONDS",
        help="--transport sse: SIGKILL the server this long into the stream phase and start "
        "it again on the same port and database; the gateway resumes its shared streams, "
        "and the run still requires zero lost, duplicated or out-of-order events (creates "
        "refused while it is down are retried with their request_id)",
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the ceiling run")
    parser.add_argument(
        "--no-ours", action="store_true", help="skip the real run of the stream phase"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=20,
        help="give up when nothing arrived for this long after the last create (default 20)",
    )
    parser.add_argument(
        "--sample-every",
        type=float,
        default=0,
        metavar="SECONDS",
        help="soak curve: record the servers' RSS and open descriptors this often during the "
        "stream phase (JSON: ours.curve)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record the measured servers with py-spy into DIR (collapsed stacks + summary)",
    )
    parser.add_argument(
        "--json-only", action="store_true", help="no progress or summary on stderr, just JSON"
    )
    parser.add_argument(
        "--keep-temp", action="store_true", help="keep the temporary directory (process logs)"
    )
    parser.set_defaults(func=run)


# The benchmark's own packages (the `bench` extra), kept out of the product's dependencies.
EXTRA_MODULES = ("hpack", "sse_starlette")
INSTALL_HINT = "pip install 'resolutionflow[bench]' (from a checkout: pip install -e '.[bench]')"


def missing_extra() -> list[str]:
    """The modules of the `bench` extra that cannot be imported here."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    return missing


def run(args: argparse.Namespace) -> int:
    if args.mode == "search":  # in process: needs none of the extra's modules
        from bench.runner import Bench

        return Bench(args).run()
    # Checked before any process starts: the load generator and the SSE ceiling run in
    # processes of their own, where a missing module would surface as a crash in a log.
    missing = missing_extra()
    if missing:
        print(
            f"resolutionflow bench: needs the bench extra ({', '.join(missing)} missing): "
            f"{INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    from bench.runner import Bench

    return Bench(args).run()
