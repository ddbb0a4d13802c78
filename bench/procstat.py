"""What a server process costs, read from /proc: CPU seconds and resident memory of a process tree.

CPU time per request is the steadier companion of requests/s on a shared machine: waiting for a core
changes throughput but hardly the CPU a request burns.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants (nginx's master and its worker, for instance)."""
    children = _children()
    out: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of every thread of these processes (not of their descendants: pass a tree)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _TICK


def memory_bytes(pids: Iterable[int]) -> dict[str, int]:
    """VmRSS and VmHWM (peak) summed over these processes."""
    total = {"VmRSS": 0, "VmHWM": 0}
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in total:
                total[key] += int(value.split()[0]) * 1024
    return total
