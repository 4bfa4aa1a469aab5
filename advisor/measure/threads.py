"""Thread counts: one count for TVM's pool and PyTorch's OpenMP, set before either starts, and
resized per measurement where a study times several counts in one process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from advisor.errors import AdvisorError


def use_threads(threads: int | None) -> int:
    """Start TVM's pool and PyTorch's OpenMP at `threads` (None: every core); returns the count."""
    count = (os.cpu_count() or 1) if threads is None else threads
    if count < 1:
        raise AdvisorError(f"--threads must be at least 1, not {count}")
    os.environ["TVM_NUM_THREADS"] = str(count)
    import torch

    torch.set_num_threads(count)
    return count


def set_tvm_threads(threads: int) -> None:
    """Resize TVM's thread pool in this process, and check that it took.

    The pool can shrink below, but never grow past, the size it started with (TVM_NUM_THREADS)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    actual = tvm.get_global_func("runtime.NumThreads")()
    if actual != threads:
        raise RuntimeError(f"TVM's thread pool runs {actual} threads, not {threads} (set TVM_NUM_THREADS="
                           f"{threads} or more before TVM starts)")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads set to `threads` (None: unchanged) for the block."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
