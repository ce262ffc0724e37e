"""py-spy around the measured window, and a text summary of what it recorded.

``resolutionflow bench --profile DIR`` records every measured server process with
``py-spy record --format raw`` (collapsed stacks) between ``go`` and ``measured`` and
writes ``DIR/<phase>-<process>.txt`` plus a ``.top.txt`` summary: the frames with the
largest share of samples, self (the frame was on top) and inclusive (anywhere on the
stack). ``python -m bench.profile FILE`` prints the summary of a recorded file.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("bench --profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class Recorder:
    def __init__(self, pid: int, out: Path, rate: int = 200, subprocesses: bool = False) -> None:
        """``subprocesses``: the workers of a ``--workers N`` parent too."""
        self.out = out
        self.popen = subprocess.Popen(
            [
                *(py_spy(), "record", "--pid", str(pid), "--format", "raw"),
                *(["--subprocesses"] if subprocesses else []),
                *("--rate", str(rate), "--gil", "--nonblocking", "--output", str(out)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
        if self.out.exists():
            self.out.with_suffix(".top.txt").write_text(summarize(self.out))


def _frame(raw: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"; lines vary, functions do not.
    name, _, where = raw.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({short})"


def summarize(path: Path, top: int = 40) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples (non-idle)", "", "self:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in self_counts.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    print(summarize(args.file, args.top), end="")


if __name__ == "__main__":
    main()
