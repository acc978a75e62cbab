"""Processes as /proc shows them (Linux): what the fault tests and the benchmarks ask of the
servers they start."""

from __future__ import annotations

from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (gunicorn's workers, a server's registry)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (in parentheses) may hold spaces: split after its closing paren
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")
