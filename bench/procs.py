"""What the processes cost, read from /proc: CPU time and resident memory.

A `Sampler` thread reads `/proc/<pid>/stat` of every process of each named
group (generator, server, database) at a fixed interval, keeps the CPU time
first and last seen for each pid, and the peak of the summed RSS per group.
A process that appears during the window is counted from zero (all its CPU
belongs to the window); one that exits keeps its last reading.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")

PidSource = Callable[[], Iterable[int]]


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_seconds: float
    rss_bytes: int


def read_stat(pid: int) -> ProcStat | None:
    """utime + stime (fields 14 and 15) and rss (field 24) of one process."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces: split after its closing ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    return ProcStat(pid, int(fields[1]), ticks / TICKS_PER_SECOND, int(fields[21]) * PAGE_BYTES)


@dataclass(frozen=True, slots=True)
class MachineTime:
    """From the `cpu` line of /proc/stat, all cores: what the machine ran
    (everything but idle, iowait and steal), and what the hypervisor took from
    this virtual machine (steal: time its virtual CPUs wanted to run and could
    not; a request on a virtual CPU in such a pause waits for it)."""

    busy_seconds: float
    steal_seconds: float

    @classmethod
    def now(cls) -> MachineTime:
        return cls.parse((PROC / "stat").read_text().split("\n", 1)[0])

    @classmethod
    def parse(cls, line: str) -> MachineTime:
        """`line`: the `cpu` line of /proc/stat (proc(5)), in clock ticks."""
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
        busy = user + nice + system + irq + softirq
        return cls(busy / TICKS_PER_SECOND, steal / TICKS_PER_SECOND)

    def __sub__(self, earlier: MachineTime) -> MachineTime:
        return MachineTime(
            self.busy_seconds - earlier.busy_seconds, self.steal_seconds - earlier.steal_seconds
        )


def own_pid() -> list[int]:
    return [os.getpid()]


def all_pids() -> list[int]:
    return [int(entry.name) for entry in PROC.iterdir() if entry.name.isdigit()]


def descendants(root: int) -> list[int]:
    """`root` and every process below it (a /proc scan of parent ids)."""
    children: dict[int, list[int]] = {}
    for pid in all_pids():
        stat = read_stat(pid)
        if stat is not None:
            children.setdefault(stat.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


class Cached:
    """A pid source re-resolved at most every `every` seconds: a full /proc
    scan per sample would cost more CPU than the processes it watches."""

    def __init__(self, resolve: PidSource, every: float = 1.0) -> None:
        self._resolve = resolve
        self._every = every
        self._pids: list[int] = []
        self._resolved = -every

    def __call__(self) -> list[int]:
        now = time.monotonic()
        if now - self._resolved >= self._every:
            self._pids = list(self._resolve())
            self._resolved = now
        return self._pids


def tree(root: int) -> PidSource:
    return Cached(lambda: descendants(root))


def named(command: str) -> PidSource:
    """Every process whose command name is `command` (read only, never signalled)."""

    def pids() -> list[int]:
        found = []
        for pid in all_pids():
            try:
                if (PROC / str(pid) / "comm").read_text().strip() == command:
                    found.append(pid)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        return found

    return Cached(pids)


@dataclass
class GroupUsage:
    """CPU seconds and peak summed RSS of one group over one window."""

    first: dict[int, float] = field(default_factory=dict)
    last: dict[int, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0

    @property
    def cpu_seconds(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0.0) for pid in self.last)

    def observe(self, stats: list[ProcStat], *, initial: bool) -> None:
        for stat in stats:
            if initial:
                self.first[stat.pid] = stat.cpu_seconds
            self.last[stat.pid] = stat.cpu_seconds
        self.peak_rss_bytes = max(self.peak_rss_bytes, sum(s.rss_bytes for s in stats))


@dataclass(frozen=True, slots=True)
class Usage:
    wall_seconds: float
    cpu_seconds: dict[str, float]
    peak_rss_bytes: dict[str, int]
    machine: MachineTime

    @property
    def other_cpu_seconds(self) -> float:
        """What the rest of the machine used meanwhile: a noisy neighbour shows here."""
        return max(0.0, self.machine.busy_seconds - sum(self.cpu_seconds.values()))


class Sampler:
    """Samples the groups in a background thread between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, PidSource], interval: float = 0.1) -> None:
        # The bench's own process (this sampler included) is a group of its own,
        # so that "other" is only what the rest of the machine used.
        self._groups: dict[str, PidSource] = {**groups, "bench": own_pid}
        self._interval = interval
        self._usage = {name: GroupUsage() for name in self._groups}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._started = 0.0
        self._machine = MachineTime(0.0, 0.0)

    def start(self) -> Sampler:
        self._sample(initial=True)
        self._started = time.monotonic()
        self._machine = MachineTime.now()
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stopping.set()
        self._thread.join()
        self._sample(initial=False)
        return Usage(
            machine=MachineTime.now() - self._machine,
            wall_seconds=time.monotonic() - self._started,
            cpu_seconds={name: usage.cpu_seconds for name, usage in self._usage.items()},
            peak_rss_bytes={name: usage.peak_rss_bytes for name, usage in self._usage.items()},
        )

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            self._sample(initial=False)

    def _sample(self, *, initial: bool) -> None:
        for name, source in self._groups.items():
            stats = [stat for pid in source() if (stat := read_stat(pid)) is not None]
            self._usage[name].observe(stats, initial=initial)


def settle(
    source: PidSource, *, idle_share: float = 0.05, window: float = 0.5, limit: float = 60.0
) -> float:
    """Wait until the processes use less than `idle_share` of one core over a
    `window` (work queued by an earlier load has drained); at most `limit`
    seconds. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = sum(stat.cpu_seconds for pid in source() if (stat := read_stat(pid)))
        time.sleep(window)
        after = sum(stat.cpu_seconds for pid in source() if (stat := read_stat(pid)))
        if after - before < idle_share * window:
            break
    return time.monotonic() - started
