"""The servers the tests and the benchmarks start: stopping them, waiting for them to be
ready, and what /proc shows of them (Linux)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import requests


def stop(process: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGTERM (a graceful stop) if `process` still runs, then SIGKILL after `grace` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def wait_ready(
    process: subprocess.Popen[bytes],
    session: requests.Session,
    url: str,
    *,
    name: str,
    log: Callable[[], str],
    seconds: float,
) -> None:
    """Poll `url` (a readiness endpoint) with `session` until it answers 200; RuntimeError with
    `log()` when `process` exits first, or after `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log()}")
        try:
            with session.get(url, timeout=1) as reply:
                if reply.status_code == 200:
                    return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} not ready within {seconds} s:\n{log()}")


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


# x86_64 and aarch64 numbers of the system calls a thread waits in for the network: read,
# poll, select, recvfrom, epoll_wait, pselect6, ppoll, epoll_pwait (and aarch64's own).
_NETWORK_WAITS = {
    "x86_64": {0, 7, 23, 45, 232, 270, 271, 281},
    "aarch64": {63, 73, 72, 207, 22},
}


def network_waiters(pid: int) -> int:
    """How many threads of `pid` sit in a network wait right now (a socket read, poll or
    select) — as opposed to idle threads, which wait on a lock (futex). The main thread is
    not counted: a gunicorn worker's event loop waits there, in epoll, whenever it is idle.
    Reads /proc/PID/task/TID/syscall (root, or the process's owner)."""
    import platform

    waits = _NETWORK_WAITS.get(platform.machine(), _NETWORK_WAITS["x86_64"])
    count = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        if task.name == str(pid):
            continue
        try:
            first = (task / "syscall").read_text().split()[0]
        except (OSError, IndexError):
            continue
        if first.lstrip("-").isdigit() and int(first) in waits:
            count += 1
    return count


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")
