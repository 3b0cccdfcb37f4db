"""CPU threads sized to what other processes leave free, so two trainings on the same cores share them.

PyTorch's OpenMP threads synchronise at the end of every parallel region. When two processes run two threads
each on two cores, every such barrier waits for a descheduled thread of its own process, and the trainings
crawl (benchmarks/README.md#two-trainings-on-two-cores-shared_corespy). :class:`ThreadGovernor` looks, every
few seconds of training, at how much CPU the *other* processes of the machine used since it last looked
(``/proc/stat`` minus this process's own time) and sets ``torch.set_num_threads`` to the cores left free (at
least one, at most the count the run started with).

Only runs that did not fix their thread count (``Runtime.threads`` None) are governed: a fixed count is
kept, because the float results of a CPU run depend on it bit-wise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

__all__ = ["ThreadGovernor", "cpu_times"]

#: Seconds between two looks at the machine's load.
CHECK_SECONDS = 5.0


def cpu_times() -> tuple[float, float] | None:
    """``(busy seconds of all CPUs, seconds this process used)`` since boot; None where /proc is unreadable."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        with open("/proc/self/stat", encoding="ascii") as own:
            parts = own.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / tick, (int(parts[11]) + int(parts[12])) / tick  # utime + stime


class ThreadGovernor:
    """Call :meth:`step` once per training batch; it re-sizes torch's threads every ``interval`` seconds.

    ``most``: the most threads to use (the run's starting count). ``log``: told of every change."""

    def __init__(self, most: int, *, interval: float = CHECK_SECONDS, log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sample: Callable[[], tuple[float, float] | None] = cpu_times,
                 cpus: int | None = None) -> None:
        self.most, self.interval, self.log, self.clock, self.sample = most, interval, log, clock, sample
        if cpus is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.cpus = cpus
        self.threads = most
        self._last = (clock(), sample())

    def step(self) -> int:
        """The thread count now in effect (changed when the free cores changed since the last look)."""
        now = self.clock()
        if self.most <= 1 or now - self._last[0] < self.interval:
            return self.threads
        times = self.sample()
        (then, before), self._last = self._last, (now, times)
        if times is None or before is None or now <= then:
            return self.threads
        others = max(0.0, (times[0] - before[0]) - (times[1] - before[1])) / (now - then)
        wanted = max(1, min(self.most, int(self.cpus - others + 0.5)))
        if wanted != self.threads:
            if self.log:
                self.log(f"threads {self.threads} -> {wanted}: other processes used {others:.1f} of "
                         f"{self.cpus} cores")
            torch.set_num_threads(wanted)
            self.threads = wanted
        return self.threads
