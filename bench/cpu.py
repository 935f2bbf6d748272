"""CPU time by process group, read from /proc: where a benchmark's cores went.

On a 2-core machine the benchmark's own load (browsers, load generators, the
Cloud API simulator) shares the cores with the helpdesk, so each report says
how much of the machine each part used.
"""

import os
from collections import Counter

TICKS = os.sysconf("SC_CLK_TCK")

# First match wins: (group, substring of the command line).
GROUPS = (
    ("browsers", "chrom"),
    ("browsers", "playwright"),
    ("asgi", "daphne"),
    ("asgi", "uvicorn"),
    ("celery", "celery"),
    ("postgres", "postgres"),
    ("redis", "redis-server"),
    ("benchmark", "bench/"),
)


def seconds(pid: int | str) -> float:
    """CPU (user + system) a process has used so far; OSError once it exited."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_seconds(pid: int) -> float:
    """seconds() of a process and its live descendants (a worker and its pool)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += seconds(current)
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending += [int(child) for child in children.read().split()]
        except OSError:
            continue  # exited in the meantime
    return total


def snapshot() -> Counter:
    """Seconds of CPU (user + system) used so far, by group, of live processes."""
    used: Counter = Counter()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            spent = seconds(pid)
        except OSError:
            continue
        group = next((name for name, part in GROUPS if part in command), "other")
        if group == "browsers" and "--type=" in command:
            # Chromium's renderers, GPU and utility (network) processes apart.
            group += "/" + command.split("--type=", 1)[1].split(" ", 1)[0]
        used[group] += spent
    return used


def share(before: Counter, after: Counter, seconds: float) -> dict[str, float]:
    """Percent of one core each group used between two snapshots."""
    return {
        group: round(100 * (after[group] - before[group]) / seconds, 1)
        for group in sorted(after, key=lambda g: before[g] - after[g])
        if after[group] - before[group] > 0.01 * seconds
    }
