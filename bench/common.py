"""Shared benchmark plumbing: timing, medians, CPU pinning, machine info and result files.

The machine is small and noisy, so every benchmark compares figures measured in the same run,
repeats each measurement and reports the median. Load generators run on CPU 0 and servers
(the registry process) on CPU 1 when there are at least two CPUs; `taskset` is used for
commands we start, `os.sched_setaffinity` for processes already running and for ourselves.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.procs import child_pids

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]

LOAD_CPU = 0
SERVER_CPU = 1


# --- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("unknown" when not readable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
        "taskset": shutil.which("taskset") is not None,
        "pinning": can_pin(),
    }


def vm_rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process from /proc/<pid>/status (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc status")


def cpu_seconds(pid: int, *, children: bool = False) -> float:
    """User + system CPU time a process has used (from /proc/<pid>/stat), in seconds; with
    `children`, plus that of its live child processes (a server process and the registry it
    started)."""
    total = 0
    for one in [pid, *(child_pids(pid) if children else [])]:
        try:
            stat = Path(f"/proc/{one}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# --- pinning -----------------------------------------------------------------------------------


def can_pin() -> bool:
    """Whether the load generator and the server can get a CPU each (two usable CPUs)."""
    usable = os.sched_getaffinity(0)
    return LOAD_CPU in usable and SERVER_CPU in usable


def pinned(command: Sequence[str], cpu: int) -> list[str]:
    """`command` prefixed with `taskset -c cpu` when taskset exists and pinning is possible."""
    if can_pin() and shutil.which("taskset"):
        return ["taskset", "-c", str(cpu), *command]
    return list(command)


def pin(pid: int, cpu: int) -> bool:
    """Pin a running process (0: this one) to `cpu`; say whether it was done."""
    if not can_pin():
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


def pin_load_generator() -> bool:
    """Pin this process (the load generator) to the load CPU."""
    return pin(0, LOAD_CPU)


# --- timing ------------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> float:
    """Seconds `fn()` took (monotonic, high resolution)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct`-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def run_command(command: Sequence[str], *, cwd: Path = ROOT, timeout: float = 120.0) -> float:
    """Run `command` (output discarded) and return its wall time; exit codes 0 and 1 are fine
    (1 is "some image denied"), anything else raises with the command's stderr."""
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout
    )
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.decode()}")
    return seconds


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A figure and the bound it must meet."""

    name: str
    measured: float
    bound: float
    unit: str = ""
    higher_is_better: bool = False

    @property
    def met(self) -> bool:
        return self.measured >= self.bound if self.higher_is_better else self.measured <= self.bound

    def describe(self) -> str:
        op = "≥" if self.higher_is_better else "≤"
        verdict = "met" if self.met else "MISSED"
        return (
            f"{self.name}: {self.measured:g}{self.unit} ({op} {self.bound:g}{self.unit}) {verdict}"
        )


@dataclass(frozen=True)
class Table:
    """Rows of figures under named columns."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def render(self) -> str:
        cells = [list(self.columns)] + [[_cell(v) for v in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for n, row in enumerate(cells):
            lines.append(
                "  ".join(
                    c.rjust(w) if n and i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass(frozen=True)
class Result:
    """One benchmark's outcome: tables, targets and notes, with the command and machine."""

    name: str
    title: str
    tables: tuple[Table, ...]
    targets: tuple[Target, ...] = ()
    notes: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return all(t.met for t in self.targets)

    def render(self) -> str:
        parts = [f"== {self.title} =="]
        parts += [t.render() for t in self.tables]
        parts += [("target " + t.describe()) for t in self.targets]
        parts += [f"note: {n}" for n in self.notes]
        return "\n\n".join(parts)


def write_result(result: Result, command: str) -> Path:
    """Write `bench/results/<name>.json` (tables, targets, notes, machine, command, time)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "name": result.name,
        "title": result.title,
        "command": command,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "tables": [
            {"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]}
            for t in result.tables
        ],
        "targets": [asdict(t) | {"met": t.met} for t in result.targets],
        "notes": list(result.notes),
        "data": result.data,
    }
    path = RESULTS / f"{result.name}.json"
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
