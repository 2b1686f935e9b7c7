"""CPU and memory of processes, from /proc (Linux)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pids_of(*pids: int) -> Callable[[], list[int]]:
    """A fixed process list, in the form CpuMeter takes."""
    return lambda: list(pids)


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of ``pids`` (fields 14 and 15 of /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (after "pid (comm)")
    return total / CLK_TCK


def rss_kib(pids: Iterable[int]) -> int:
    """Resident set size of ``pids`` in KiB (VmRSS; nchan's shared memory counts once it is touched)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def system_busy_seconds() -> float:
    """CPU time all processes of the machine used: user + nice + system + steal from /proc/stat.
    Interrupt and softirq time (loopback networking of the benchmark itself) is left out."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, _irq, _softirq, steal = (
            int(x) for x in f.readline().split()[1:9]
        )
    return (user + nice + system + steal) / CLK_TCK


class CpuMeter:
    """CPU use of named process groups over an interval, in percent of one core, plus ``others``: what
    the rest of the machine used meanwhile (a shared machine makes the figures unreliable)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.start_wall = time.monotonic()
        self.start = {name: cpu_seconds(pids()) for name, pids in groups.items()}
        self.start_system = system_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self.start_wall, 1e-6)
        out = {
            name: 100.0 * (cpu_seconds(pids()) - self.start[name]) / wall
            for name, pids in self.groups.items()
        }
        system = 100.0 * (system_busy_seconds() - self.start_system) / wall
        out["others"] = max(0.0, system - sum(out.values()))
        return out


def wait_rss_stable(pids: Callable[[], list[int]], timeout: float = 10.0, window: float = 0.5) -> int:
    """RSS once it stopped changing for ``window`` seconds (or at ``timeout``)."""
    deadline = time.monotonic() + timeout
    last = rss_kib(pids())
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)  # sampling interval of a polled condition
        now = rss_kib(pids())
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= window:
            break
    return last


def wait_quiet(max_wait: float, threshold: float = 20.0, window: float = 2.0) -> float:
    """Wait (up to ``max_wait`` s) until the rest of the machine uses under ``threshold`` percent of a
    core for ``window`` seconds; returns the last sample (percent of one core)."""
    deadline = time.monotonic() + max_wait
    while True:
        meter = CpuMeter({})
        time.sleep(window)  # the sampling window itself
        busy = meter.stop()["others"]
        if busy < threshold or time.monotonic() >= deadline:
            return busy
