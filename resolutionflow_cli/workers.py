"""``--workers N``: N processes of one server on one port, and the parent that runs them.

One Python process does its Python work on one core; N worker processes listening on one
port with ``SO_REUSEPORT`` let the kernel spread connections over N cores. The workers
are replicas (they share one PostgreSQL like servers on different machines do), so they
need nothing from each other; the parent only reserves the port, starts them, restarts
one that dies, and stops them all on SIGTERM/SIGINT.

The port is checked and held by the parent: a busy port stays a start-up error (gRPC and
uvicorn would otherwise join whatever else set ``SO_REUSEPORT`` there), and while a worker
is being restarted no other program can take it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.errors import StartupError

log = logging.getLogger("resolutionflow.workers")

# A worker killed this soon again after a restart is given up on (and then the parent).
RESTART_LIMIT = 5
RESTART_WINDOW_SECONDS = 60.0


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise StartupError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def join_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve(addr: str) -> tuple[socket.socket, str]:
    """Check that ``addr`` is free and hold it for the workers: a socket bound with
    ``SO_REUSEPORT`` that never listens (the kernel hands connections to listening sockets
    only). Returns the socket and the address with its port (port 0 picks one)."""
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        # Without SO_REUSEPORT this bind fails while anything listens on the port, also a
        # program that set SO_REUSEPORT itself (which the workers' binds would join).
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError as e:
            raise StartupError(
                f"cannot listen on {addr}: {e.strerror or e} "
                "(is another server running on this port?)"
            ) from e
        finally:
            probe.close()
    hold = socket.socket(family, socket.SOCK_STREAM)
    try:
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        hold.bind((host, port))
    except OSError as e:
        hold.close()
        raise StartupError(f"cannot listen on {addr}: {e.strerror or e}") from e
    return hold, join_addr(host, int(hold.getsockname()[1]))


def follow_parent() -> None:
    """In a worker: end (SIGTERM, so gracefully) when the parent dies, whatever killed it,
    rather than serve on as an orphan that holds the port. Linux only; elsewhere a no-op."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def announce_ready(fd: int | None) -> None:
    """In a worker: tell the parent this worker serves (one byte on the pipe it gave)."""
    if fd is None:
        return
    try:
        os.write(fd, b"1")
    finally:
        os.close(fd)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    ready_fd: int
    ready: bool = False
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Runs ``argv + ["--worker-index", i, "--ready-fd", fd]`` for i in 0..n-1 with ``env``.

    A worker that exits before it announced itself ready is a start-up failure: the parent
    stops the others and exits 1 (the same error would hit every worker). One that dies
    after it served is restarted with the same index; more than ``RESTART_LIMIT`` deaths
    of one worker within ``RESTART_WINDOW_SECONDS`` also make the parent exit 1, so a
    crash loop reaches whatever supervises the parent.
    """

    def __init__(
        self, what: str, n: int, argv: Sequence[str], env: dict[str, str], stop_timeout: float
    ) -> None:
        self.what = what
        self.n = n
        self.argv = list(argv)
        self.env = env
        self.stop_timeout = stop_timeout
        self.workers: dict[int, _Worker] = {}
        self._deaths: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()

    def _spawn(self, index: int) -> None:
        read, write = os.pipe()
        try:
            proc = subprocess.Popen(
                [*self.argv, "--worker-index", str(index), "--ready-fd", str(write)],
                env=self.env,
                pass_fds=(write,),
            )
        finally:
            os.close(write)
        self.workers[index] = _Worker(index, proc, read)
        self._selector.register(read, selectors.EVENT_READ, index)

    def _readable(self, fd: int, index: int) -> None:
        data = os.read(fd, 1)
        self._selector.unregister(fd)
        os.close(fd)
        worker = self.workers[index]
        worker.ready = bool(data)
        if not data:
            return  # the worker exited before it was ready; the poll below says how
        log.info("%s worker %d (pid %d) serving", self.what, index, worker.proc.pid)
        if all(w.ready for w in self.workers.values()):
            print(f"resolutionflow: {self.what}: {self.n} workers serving", flush=True)

    def _exited(self, worker: _Worker, code: int) -> bool:
        """Whether to go on (the worker was restarted) after it exited with ``code``."""
        if not worker.ready:
            log.error(
                "%s worker %d exited with %d before it served; stopping",
                self.what,
                worker.index,
                code,
            )
            return False
        now = time.monotonic()
        recent = self._deaths.get(worker.index, [])
        deaths = [t for t in recent if now - t < RESTART_WINDOW_SECONDS] + [now]
        self._deaths[worker.index] = deaths
        if len(deaths) > RESTART_LIMIT:
            log.error("%s worker %d keeps dying; stopping", self.what, worker.index)
            return False
        log.warning(
            "%s worker %d (pid %d) exited with %d; restarting it",
            self.what,
            worker.index,
            worker.proc.pid,
            code,
        )
        self._spawn(worker.index)
        return True

    def run(self) -> int:
        """Until SIGTERM/SIGINT (exit 0 if every worker stopped cleanly) or a failure (1)."""
        previous = {
            sig: signal.signal(sig, lambda *_: self._stop.set())
            for sig in (signal.SIGTERM, signal.SIGINT)
        }
        code = 0
        try:
            for index in range(self.n):
                self._spawn(index)
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.2):
                    self._readable(int(key.fd), int(key.data))
                for worker in list(self.workers.values()):
                    returncode = worker.proc.poll()
                    if returncode is None:
                        continue
                    if worker.ready_fd in self._selector.get_map():
                        self._readable(worker.ready_fd, worker.index)
                    if not self._exited(worker, returncode):
                        code = 1
                        self._stop.set()
                        break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if not self._stop_all():
                code = 1
        return code

    def _stop_all(self) -> bool:
        """SIGTERM to every worker, SIGKILL to those still running after the timeout."""
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        clean = True
        for worker in self.workers.values():
            try:
                code = worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                code = worker.proc.wait()
                log.error("%s worker %d did not stop in time", self.what, worker.index)
            clean = clean and code == 0
        for key in list(self._selector.get_map().values()):
            self._selector.unregister(key.fd)
            os.close(key.fd)
        self._selector.close()
        return clean


def run_workers(
    command: str,
    n: int,
    addrs: dict[str, str],
    env: dict[str, str],
    *,
    verbose: bool,
    stop_timeout: float,
    before: Callable[[], None] | None = None,
    flags: Sequence[str] = (),
) -> int:
    """``command --workers n``: reserve the addresses (``addrs``: setting variable ->
    address), run ``before`` (with the ports held), then the workers (each with ``flags``
    too) until a signal; returns the exit code."""
    held: list[socket.socket] = []
    try:
        bound = {}
        for variable, wanted in addrs.items():
            hold, bound[variable] = reserve(wanted)
            held.append(hold)
        if before is not None:
            before()
        where = ", ".join(bound.values())
        print(f"resolutionflow: {command} on {where}, {n} workers", flush=True)
        # This same program and Python; settings reach the workers through the environment.
        argv = [sys.executable, "-m", "resolutionflow_cli", *(["-v"] if verbose else [])]
        return Supervisor(
            command, n, [*argv, command, *flags], {**os.environ, **env, **bound}, stop_timeout
        ).run()
    finally:
        for hold in held:
            hold.close()
