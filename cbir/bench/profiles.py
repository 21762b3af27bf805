"""Sampled profiles of running processes (py-spy), summarised as text a reader can diff.

`Profiler.start(name, pid)` attaches `py-spy record` to a process (and its subprocesses) for
the rest of a measured phase; `stop()` writes, per process, the raw collapsed stacks
(`raw/<name>.folded`, the input of any flame-graph tool; not committed) and a summary
(`<name>.txt`): the share of samples per function, inclusive (anywhere on the stack) and
self (at the top), and the hottest whole stacks. Sampling is non-blocking (py-spy does not
pause the process), at 100 Hz: its cost is py-spy's own CPU, not the profiled process's.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cbir.bench.common import RESULTS
from cbir.output import console

RATE_HZ = 100
PROFILES = RESULTS / "profiles"
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    """'function (path/to/module.py:12)' -> 'function (module.py)': lines merged."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    tail = "/".join(match["file"].split("/")[-2:])
    return f"{match['function']} ({tail})"


def summarise(folded: str, title: str, top: int = 25) -> str:
    """The summary of collapsed stacks ('frame;frame;frame count' per line)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    stacks: Counter[str] = Counter()
    total = 0
    for line in folded.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        for name in set(frames[1:]):  # the first frame is the process/thread label
            inclusive[name] += count
        own[frames[-1]] += count
        stacks[" <- ".join(reversed(frames[-4:]))] += count
    if total == 0:
        return f"# {title}\nno samples (the process was idle or exited)\n"
    lines = [
        f"# {title}",
        f"{total} samples at {RATE_HZ} Hz over all threads (~{total / RATE_HZ:.1f} thread-seconds;"
        " not CPU: a thread waiting in a socket read counts, as py-spy sees it running)",
        "",
    ]
    lines += ["## inclusive: share of samples with the function anywhere on the stack"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "## self: share of samples with the function on top"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "## hottest stacks (innermost first, 4 frames)"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in stacks.most_common(10)]
    return "\n".join(lines) + "\n"


@dataclass
class Profiler:
    """py-spy on several processes at once, writing into `folder`."""

    folder: Path
    running: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)

    @staticmethod
    def executable() -> str | None:
        """py-spy beside this Python (the venv's, when its bin is not on PATH), else on PATH."""
        beside = Path(sys.executable).parent / "py-spy"
        return str(beside) if beside.exists() else shutil.which("py-spy")

    def start(self, name: str, pid: int, subprocesses: bool = True) -> None:
        py_spy = self.executable()
        if py_spy is None:
            raise RuntimeError(
                "py-spy is not installed: run scripts/bootstrap.sh (it installs the dev extras)"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "raw").mkdir(exist_ok=True)
        raw = self.folder / "raw" / f"{name}.folded"
        command = [py_spy, "record", "--pid", str(pid), "--rate", str(RATE_HZ)]
        command += ["--format", "raw", "--output", str(raw), "--nonblocking"]
        if subprocesses:
            command.append("--subprocesses")
        self.running[name] = (
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            raw,
        )

    def stop(self, note: str = "") -> list[Path]:
        """End every recording (py-spy writes its file on SIGINT); the summaries written."""
        written = []
        for name, (process, raw) in self.running.items():
            process.send_signal(signal.SIGINT)
            try:
                _, errors = process.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                process.kill()
                _, errors = process.communicate()
            if not raw.exists():
                console.print(f"[yellow]py-spy wrote no profile of {name}[/]: {errors[-300:]!r}")
                continue
            summary = self.folder / f"{name}.txt"
            title = f"{name}{f': {note}' if note else ''}"
            summary.write_text(summarise(raw.read_text(), title))
            written.append(summary)
        self.running.clear()
        return written
