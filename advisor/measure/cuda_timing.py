"""Time GPU work without launch overhead hiding the kernel: CUDA graphs replayed, timed by events.

`number` calls are captured into one CUDA graph (TVM's launches join the capture through
tvm_ffi's torch stream context), and each sample is one replay timed by CUDA events, divided
by `number`. The CPU cost of launching from Python (PyTorch's dispatcher, TVM's VM) is then
outside the measurement, for both backends alike. Where capture fails, samples fall back to
events around `number` ordinary launches (what `torch.cuda.Event` timing usually means).
"""

from __future__ import annotations

from collections.abc import Callable

from advisor.board.timing import Timing, TimingPolicy

MAX_CALLS_PER_GRAPH = 200


def time_cuda(call: Callable[[], object], policy: TimingPolicy, tvm_stream: bool = False) -> tuple[Timing, str]:
    """Return (timing, method) where method is 'cuda-graph' or 'cuda-events'."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with _on_stream(torch.cuda.stream(stream), tvm_stream):  # capture needs a side stream warmed up
        for _ in range(max(policy.warmup, 3)):
            call()
    torch.cuda.synchronize()
    number = _calls_per_sample(call, policy)
    try:
        graph = torch.cuda.CUDAGraph()
        with _on_stream(torch.cuda.graph(graph), tvm_stream):
            for _ in range(number):
                call()
        torch.cuda.synchronize()
        replay, method = graph.replay, "cuda-graph"
    except Exception:  # capture refused (allocation or sync inside the call): time plain launches
        torch.cuda.synchronize()

        def replay() -> None:
            with _on_stream(None, tvm_stream):
                for _ in range(number):
                    call()

        method = "cuda-events"
    replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(policy.repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        replay()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / number)
    return Timing.from_samples(samples, number), method


def _calls_per_sample(call: Callable[[], object], policy: TimingPolicy) -> int:
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        call()
    end.record()
    end.synchronize()
    once_ms = max(start.elapsed_time(end) / 10, 1e-4)
    return max(1, min(MAX_CALLS_PER_GRAPH, int(policy.min_sample_ms / once_ms + 0.999)))


class _on_stream:
    """Enter a torch stream/graph context and, for TVM, make TVM launch on torch's stream."""

    def __init__(self, context, tvm_stream: bool) -> None:
        self.context, self.tvm_stream = context, tvm_stream

    def __enter__(self):
        if self.tvm_stream:
            import tvm_ffi

            self.entered = tvm_ffi.use_torch_stream(self.context)
        else:
            import contextlib

            self.entered = self.context or contextlib.nullcontext()
        self.entered.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.entered.__exit__(*exc)
