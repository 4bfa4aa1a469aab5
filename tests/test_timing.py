"""The measuring process's allocator: timed calls must not fault in fresh memory each time."""

import multiprocessing
import platform
from concurrent.futures import ProcessPoolExecutor

import pytest


def _faults_per_call(steady: bool, calls: int = 40) -> float:
    import resource

    import torch

    from advisor.board.timing import steady_allocator

    torch.set_num_threads(1)
    if steady:
        assert steady_allocator()
    x, weight = torch.randn(1, 64, 32, 32), torch.randn(256, 64, 3, 3)  # conv3 at 256 channels
    with torch.inference_mode():
        for _ in range(3):
            torch.nn.functional.conv2d(x, weight, padding=1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            torch.nn.functional.conv2d(x, weight, padding=1)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_steady_allocator_stops_page_faults_in_a_fresh_process():
    # a spawned process has the allocator state a fresh `advisor sweep` starts with
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        default = pool.submit(_faults_per_call, False).result()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        steady = pool.submit(_faults_per_call, True).result()
    # ~1 MB of output a call is 256 pages: glibc's default hands them back and faults them in again on
    # every call (what made 172-256 channels read slow); the steady allocator keeps them
    assert default >= 200, f"only {default:.0f} page faults a call with glibc's default allocator: nothing to fix"
    assert steady < 5, f"{steady:.0f} page faults a call with the steady allocator (default: {default:.0f})"
