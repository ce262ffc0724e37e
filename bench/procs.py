"""Child processes and what /proc says about them (CPU seconds, resident memory)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/<pid>/stat`` utime + stime)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces; everything after its ")" is space-separated.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a ``--workers N`` parent and its workers)."""
    found = [pid]
    for one in found:
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{one}/task"):
                with open(f"/proc/{one}/task/{task}/children") as f:
                    found += [int(child) for child in f.read().split()]
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and its live descendants, summed."""
    total = 0.0
    for one in tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(one)
    return total


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status``: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def machine_cpu_seconds() -> float:
    """CPU time used by everything on the machine so far (all of /proc/stat's busy fields)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # minus idle and iowait
    return busy / CLK_TCK


def free_port(consecutive: int = 1) -> int:
    """A free port P (with P + 1 .. P + consecutive - 1 free as well)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if all(_bindable(port + i) for i in range(1, consecutive)):
                return port
    raise RuntimeError(f"no {consecutive} consecutive free ports")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def machine() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


class Proc:
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_dir: Path,
        stdin: int | None = subprocess.DEVNULL,
        stdout_pipe: bool = False,
        stderr_passthrough: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=stdin,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=None if stderr_passthrough else self._log,
            start_new_session=True,  # a ^C to the bench is handled by the bench, in order
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def cpu(self) -> float:
        """Its CPU seconds with its children's (the workers of ``--workers N``)."""
        return tree_cpu_seconds(self.pid)

    def peak_rss_kib(self) -> int:
        return sum(status_kib(pid, "VmHWM") for pid in tree(self.pid))

    def rss_kib(self) -> int:
        return sum(status_kib(pid, "VmRSS") for pid in tree(self.pid))

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._log.close()


class Sampler:
    """Resident memory and open descriptors of some processes, every ``every`` seconds.

    A thread, so that a sample is taken on time however long the caller blocks waiting on
    the load generator; the samples make the curve of a soak run.
    """

    def __init__(self, procs: dict[str, Proc], every: float) -> None:
        self.procs = procs
        self.every = every
        self.samples: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        row: dict[str, object] = {"t": round(time.monotonic() - self._t0, 1)}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError, KeyError):
                row[name] = {"rss_kib": proc.rss_kib(), "fds": proc.open_fds()}
        self.samples.append(row)

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.every):
            self._sample()

    def stop(self) -> list[dict[str, object]]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.samples


def wait_until(
    ready: Callable[[], bool], proc: Proc, what: str, timeout: float = 60, every: float = 0.05
) -> None:
    """Poll ``ready()`` until it holds; fail early (with the log) if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:  # not up yet
            pass
        if not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited with {proc.popen.returncode} before {what}:\n{proc.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: no {what} after {timeout:g}s:\n{proc.log_tail()}")
        time.sleep(every)


def tcp_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
