"""Latency as a measurement: warm-up, repeated samples, and the spread kept."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TimingPolicy:
    warmup: int = 3  # calls before any sample
    repeats: int = 15  # samples kept
    min_sample_ms: float = 20.0  # each sample loops the call until it lasts this long


@dataclass(frozen=True)
class Timing:
    """Milliseconds per call, summarising `repeats` samples of `number` calls each."""

    median_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int
    number: int

    @classmethod
    def from_samples(cls, samples_ms: list[float], number: int) -> "Timing":
        ordered = sorted(samples_ms)
        quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
        return cls(
            median_ms=statistics.median(ordered),
            mean_ms=statistics.fmean(ordered),
            std_ms=statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
            min_ms=ordered[0],
            max_ms=ordered[-1],
            p25_ms=quartiles[0],
            p75_ms=quartiles[2],
            repeats=len(ordered),
            number=number,
        )

    def to_dict(self) -> dict:
        return asdict(self)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def steady_allocator() -> bool:
    """Keep freed memory in this process's heap (glibc), so that no timed call pays page faults.

    glibc serves large blocks with fresh pages above a threshold that adapts to the process's history
    and gives freed heap back to the kernel past another, so whole shapes could read slow for the life
    of one process; a deployed network keeps its buffers, so fixed thresholds measure what it sees
    (docs/timing.md). Once per process; returns whether they were set (False off glibc)."""
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def calls_per_sample(call: Callable[[], object], policy: TimingPolicy, sync: Callable[[], None]) -> int:
    """How many calls make one sample last at least policy.min_sample_ms."""
    start = time.perf_counter()
    call()
    sync()
    once_ms = max((time.perf_counter() - start) * 1e3, 1e-3)
    return max(1, int(policy.min_sample_ms / once_ms + 0.999))


def time_callable(call: Callable[[], object], policy: TimingPolicy,
                  sync: Callable[[], None] = lambda: None) -> Timing:
    """Time a Python callable (PyTorch eager) with the wall clock."""
    steady_allocator()
    for _ in range(policy.warmup):
        call()
    sync()
    number = calls_per_sample(call, policy, sync)
    samples = []
    for _ in range(policy.repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        sync()
        samples.append((time.perf_counter() - start) * 1e3 / number)
    return Timing.from_samples(samples, number)
