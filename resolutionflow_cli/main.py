"""The ``resolutionflow`` command line: every command, and the wiring of ``serve``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from resolutionflow_cli.workers import announce_ready, follow_parent, run_workers
from server import logs, tracing
from server.auth import LocalSignIn, TokenCodec
from server.domain.types import Role
from server.errors import StartupError
from server.loops import run
from server.settings import JWT_SECRET_FILE, ConfigError, Settings


def _settings(args: argparse.Namespace) -> Settings:
    """Environment first, then any flag given on the command line."""
    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("database_url", "grpc_addr", "http_addr", "upstream")
        if getattr(args, key, None) is not None
    }
    return Settings(**overrides)


async def _serve_grpc(
    settings: Settings, worker: int | None = None, ready_fd: int | None = None
) -> None:
    # Imported by the commands that run a server only: the server and its migrations
    # (SQLAlchemy, Alembic, gRPC services) are most of this program's start-up time, and
    # `token`, `watch` and `gateway` start often (scripts, the tests).
    from server.runtime import ServerRuntime

    runtime = ServerRuntime(settings, worker)
    await runtime.start()
    who = "" if worker is None else f" (worker {worker}, pid {os.getpid()})"
    print(
        f"resolutionflow: gRPC on {settings.grpc_addr}{who}, database {runtime.db.url!r}",
        flush=True,
    )
    announce_ready(ready_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("resolutionflow: shutting down", flush=True)
    await runtime.stop()


async def _serve_all(
    settings: Settings,
    http_addr: str | None,
    local_admin: bool = False,
    worker: int | None = None,
    ready_fd: int | None = None,
) -> None:
    """``serve``: the gRPC server and the HTTP gateway in one process and event loop."""
    from gateway.serve import start_gateway, upstream_for, wait_for_signal
    from gateway.settings import GatewaySettings
    from server.runtime import ServerRuntime

    runtime = ServerRuntime(settings, worker)
    await runtime.start()
    overrides: dict[str, Any] = {"http_addr": http_addr} if http_addr else {}
    gateway_settings = GatewaySettings(
        **overrides, upstream=upstream_for(settings.grpc_addr, runtime.port)
    )
    # Local mode: the page's sign-in form may ask the gateway for a token of our codec.
    codec = TokenCodec(settings.resolved_jwt_secret())
    local = LocalSignIn(codec, allow_admin=local_admin)
    try:
        gateway = await start_gateway(
            gateway_settings, local_sign_in=local, reuse_port=worker is not None
        )
    except BaseException:
        await runtime.stop()
        raise
    print(
        f"resolutionflow: gRPC on {settings.grpc_addr}, HTTP gateway on {gateway.url}, "
        f"database {runtime.db.url!r}",
        flush=True,
    )
    announce_ready(ready_fd)
    await wait_for_signal(gateway.task)
    print("resolutionflow: shutting down", flush=True)
    await asyncio.gather(gateway.stop(), runtime.stop(), return_exceptions=True)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    workers = _workers(args)
    if args.worker_index is not None or workers == 1:
        run(
            _serve_all(
                settings,
                getattr(args, "http_addr", None),
                bool(args.local_admin),
                args.worker_index,
                args.ready_fd,
            )
        )
        return 0
    _require_postgresql(settings, workers)
    from gateway.settings import GatewaySettings

    http_addr = args.http_addr or GatewaySettings().http_addr
    return run_workers(
        "serve",
        workers,
        {"RF_GRPC_ADDR": settings.grpc_addr, "RF_HTTP_ADDR": http_addr},
        {"RF_DATABASE_URL": settings.database_url},
        verbose=args.verbose,
        stop_timeout=settings.shutdown_grace_seconds + 20,
        before=lambda: _upgrade(settings.database_url),
        flags=["--local-admin"] if args.local_admin else [],
    )


def _upgrade(database_url: str) -> None:
    from server.db.migrate import upgrade

    asyncio.run(upgrade(database_url))


def _workers(args: argparse.Namespace) -> int:
    """How many workers to start (1: none, this process serves); a worker follows its
    parent (it ends when the parent does)."""
    if args.worker_index is not None:
        follow_parent()
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    return int(args.workers)


def _require_postgresql(settings: Settings, workers: int) -> None:
    if settings.database_url.startswith("sqlite"):
        raise ConfigError(
            f"--workers {workers} needs PostgreSQL: SQLite has one writer at a time and "
            "wakes only the streams of its own process, so run one server process on it "
            "(--workers 1)"
        )


def cmd_server(args: argparse.Namespace) -> int:
    settings = _settings(args)
    workers = _workers(args)
    if args.worker_index is not None or workers == 1:
        run(_serve_grpc(settings, args.worker_index, args.ready_fd))
        return 0
    _require_postgresql(settings, workers)
    return run_workers(
        "server",
        workers,
        {"RF_GRPC_ADDR": settings.grpc_addr},
        {"RF_DATABASE_URL": settings.database_url},
        verbose=args.verbose,
        stop_timeout=settings.shutdown_grace_seconds + 20,
        # Once, before the workers: each would otherwise migrate (they would take turns).
        before=lambda: _upgrade(settings.database_url),
    )


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.serve import run_gateway
    from gateway.settings import GatewaySettings

    overrides: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("http_addr", "upstream")
        if getattr(args, key, None) is not None
    }
    settings = GatewaySettings(**overrides)
    workers = _workers(args)
    if args.worker_index is not None or workers == 1:
        run(run_gateway(settings, reuse_port=args.worker_index is not None, ready_fd=args.ready_fd))
        return 0
    return run_workers(
        "gateway",
        workers,
        {"RF_HTTP_ADDR": settings.http_addr},
        {"RF_UPSTREAM": settings.upstream},
        verbose=args.verbose,
        stop_timeout=settings.shutdown_grace_seconds + 20,
    )


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from server.db.migrate import upgrade

    asyncio.run(upgrade(settings.database_url))
    print(f"database at head: {settings.database_url}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    codec = TokenCodec(Settings().existing_jwt_secret())
    print(
        codec.issue(
            account=args.account,
            user=args.user,
            role=Role(args.role),
            name=args.name or args.user,
            ttl_seconds=args.ttl,
        )
    )
    return 0


def _describe(event: Any) -> str:
    from resolutionflow.v1 import handoff_pb2 as pb

    kind = pb.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
    if event.type in (pb.EVENT_TYPE_SNAPSHOT, pb.EVENT_TYPE_RESET):
        lines = [f"#{event.sequence} {kind} {len(event.snapshot)} open {event.reset_reason}"]
        lines += [f"    {_handoff_line(h)}" for h in event.snapshot]
        return "\n".join(lines)
    if not event.HasField("handoff"):  # an account event
        e = event.webhook_endpoint
        return f"#{event.sequence} {kind} endpoint {e.id} ({e.host}): {e.last_error}"
    note = f" - {event.note}" if event.note else ""
    return f"#{event.sequence} {kind} {_handoff_line(event.handoff)}{note}"


def _handoff_line(h: Any) -> str:
    from resolutionflow.v1 import handoff_pb2 as pb

    priority = pb.Priority.Name(h.priority).removeprefix("PRIORITY_")
    holder = f" (picked up by {h.picked_up_by.name})" if h.HasField("picked_up_by") else ""
    return f"[{priority}] {h.id} {h.problem_summary[:80]!r} by {h.created_by.name}{holder}"


async def _watch(args: argparse.Namespace) -> int:
    import grpc
    from resolutionflow.v1 import escalation_pb2, escalation_pb2_grpc
    from resolutionflow.v1 import handoff_pb2 as pb

    from clients.streams import resuming_stream

    settings = _settings(args)
    bearer, source, mint = _watch_token(args, settings)
    # Which token, so that a 401 or an unexpected queue is easy to explain.
    print(f"-- {source}", flush=True)
    metadata = [("authorization", f"Bearer {bearer}")]
    upstream = args.upstream or settings.upstream

    async def renew_token() -> None:
        assert mint is not None
        metadata[0] = ("authorization", f"Bearer {mint()}")

    async with grpc.aio.insecure_channel(upstream) as channel:
        stub = escalation_pb2_grpc.EscalationServiceStub(channel)

        def open_stream(after: int | None) -> Any:
            request = escalation_pb2.StreamEscalationsRequest()
            if after is not None:
                request.after_sequence = after
            return stub.StreamEscalations(request, metadata=tuple(metadata))

        def disconnected(error: grpc.aio.AioRpcError, delay: float) -> None:
            if error.code() is grpc.StatusCode.UNAUTHENTICATED:
                print(f"-- {error.details()}; resuming with a fresh token", flush=True)
                return
            print(f"-- disconnected ({error.code().name}); retrying in {delay:.1f}s", flush=True)

        def resumed(after: int | None) -> None:
            where = f"after #{after}" if after is not None else "from a fresh snapshot"
            print(f"-- reconnected to {upstream}; resuming {where}", flush=True)

        try:
            async for event in resuming_stream(
                open_stream,
                args.after,
                on_disconnect=disconnected,
                on_resume=resumed,
                renew_token=renew_token if mint is not None else None,
            ):
                if event.type != pb.EVENT_TYPE_HEARTBEAT:
                    print(_describe(event), flush=True)
        except grpc.aio.AioRpcError as e:
            print(f"resolutionflow: error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


def _watch_token(
    args: argparse.Namespace, settings: Settings
) -> tuple[str, str, Callable[[], str] | None]:
    """The bearer token ``watch`` uses, a line saying where it came from, and how to mint
    the next one (None for a given token: it cannot be renewed here).

    A token of our own is minted again whenever the server ends the stream for expiry,
    so watch runs for as long as it is left running."""
    given, where = (args.token, "--token") if args.token else (os.environ.get("RF_TOKEN"), "")
    where = where or "RF_TOKEN"
    if given:
        claims = _unverified_claims(given)
        who = (
            f" (user {claims.get('sub')}, role {claims.get('role')}, "
            f"account {claims.get('account')})"
            if claims
            else ""
        )
        if claims and claims.get("account") != args.account:
            who += f"; the queue shown is that account's, not {args.account}'s"
        return given, f"using the token from {where}{who}; not renewed when it expires", None
    codec = TokenCodec(settings.existing_jwt_secret())

    def mint() -> str:
        return codec.issue(
            account=args.account,
            user=args.user,
            role=Role.ENGINEER,
            name=args.user,
            ttl_seconds=args.ttl,
        )

    signer = (
        "RF_JWT_SECRET"
        if settings.jwt_secret is not None
        else str((settings.var_dir / JWT_SECRET_FILE).resolve())
    )
    return (
        mint(),
        f"minted a local engineer token for account {args.account} (user {args.user}), "
        f"signed with {signer} and renewed when it expires; pass --token or set RF_TOKEN to "
        "watch as someone else",
        mint,
    )


def _unverified_claims(token: str) -> dict[str, Any]:
    """The claims, read without checking the signature: only to describe the token (the
    server is the one that checks it)."""
    import jwt

    try:
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims


def cmd_watch(args: argparse.Namespace) -> int:
    return asyncio.run(_watch(args))


def _nonblank(value: str) -> str:
    """An id that must say something: a blank account or user would sign a useless token."""
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _add_workers(parser: argparse.ArgumentParser, note: str) -> None:
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help=f"N processes on one port (SO_REUSEPORT), one core each; default 1 ({note})",
    )
    # Set by the parent of --workers N on each worker it starts.
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resolutionflow", description="ResolutionFlow Escalations"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="run the gRPC server and the HTTP gateway in one process (embedded SQLite)"
    )
    serve.add_argument("--grpc-addr", help="default 127.0.0.1:50051 (RF_GRPC_ADDR)")
    serve.add_argument("--http-addr", help="default 127.0.0.1:8080 (RF_HTTP_ADDR)")
    serve.add_argument("--database-url", help="default ./var/resolutionflow.db (RF_DATABASE_URL)")
    serve.add_argument(
        "--local-admin",
        action="store_true",
        help="let the page's local sign-in hand out admin tokens too (off: never admin)",
    )
    _add_workers(serve, "PostgreSQL only: SQLite has one writer")
    serve.set_defaults(func=cmd_serve)

    server = sub.add_parser("server", help="run the gRPC server only")
    server.add_argument("--grpc-addr", help="default 127.0.0.1:50051 (RF_GRPC_ADDR)")
    server.add_argument("--database-url", help="(RF_DATABASE_URL)")
    _add_workers(server, "PostgreSQL only: SQLite has one writer")
    server.set_defaults(func=cmd_server)

    gateway = sub.add_parser("gateway", help="run the HTTP gateway (REST + SSE) only")
    gateway.add_argument("--http-addr", help="default 127.0.0.1:8080 (RF_HTTP_ADDR)")
    gateway.add_argument("--upstream", help="gRPC server, default 127.0.0.1:50051 (RF_UPSTREAM)")
    _add_workers(gateway, "each with its own connections upstream")
    gateway.set_defaults(func=cmd_gateway)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_upgrade = db_sub.add_parser("upgrade", help="migrate the database to the latest schema")
    db_upgrade.add_argument("--database-url", help="(RF_DATABASE_URL)")
    db_upgrade.set_defaults(func=cmd_db_upgrade)

    token = sub.add_parser("token", help="print a signed bearer token for local use")
    token.add_argument("--account", required=True, type=_nonblank)
    token.add_argument("--user", required=True, type=_nonblank)
    token.add_argument("--role", required=True, choices=[r.value for r in Role])
    token.add_argument("--name", default="")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    token.set_defaults(func=cmd_token)

    watch = sub.add_parser("watch", help="tail an account's escalation queue; resumes by itself")
    watch.add_argument("--account", required=True)
    watch.add_argument("--after", type=int, default=None, help="resume after this sequence")
    watch.add_argument("--upstream", help="gRPC server, default 127.0.0.1:50051 (RF_UPSTREAM)")
    watch.add_argument("--user", default="cli-watch", help="engineer user id for a local token")
    watch.add_argument(
        "--token",
        help="bearer token, not renewed (default: RF_TOKEN, else local engineer tokens, renewed)",
    )
    watch.add_argument(
        "--ttl", type=int, default=3600, help="seconds each local token lasts (default 3600)"
    )
    watch.set_defaults(func=cmd_watch)

    from bench.cli import add_arguments as add_bench_arguments  # stdlib-only module

    bench = sub.add_parser("bench", help="benchmark the real stack against bare ceilings")
    add_bench_arguments(bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logs.configure(args.verbose, settings.log_format)
    if args.command in ("serve", "server", "gateway"):
        tracing.configure(settings.otel_endpoint, f"resolutionflow-{args.command}")
    try:
        return int(args.func(args))
    except StartupError as e:
        print(f"resolutionflow: {e}", file=sys.stderr, flush=True)
        return 1
    except ConfigError as e:
        print(f"resolutionflow: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    sys.exit(main())
