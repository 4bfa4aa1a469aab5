"""Memory of a model variant: bytes to store it, and memory taken while it runs.

Stored bytes count every tensor of the state dict at its own element size (fp32 4, fp16 2, int8 1,
plus per-tensor or per-channel scales and zero points). A tensor with zeros is counted in the smallest
of three honest formats: dense; CSR over its first dimension (values + int32 column indices + int32
row pointers); or a bitmask (values + one bit per element). So pruned weights only save bytes once
they are sparse enough to pay for their indices.

Peak memory while running:
- PyTorch: the largest total of live CPU allocations during one forward pass, from the PyTorch
  profiler's allocation events (activations and workspace; the weights, allocated before, are not in it);
- TVM: the growth of the process's resident set size (psutil, sampled every 0.2 ms) over the first
  inference calls of a freshly loaded module, so its workspace and activation pools are counted once.
  Page granularity (4 KiB) and allocator reuse make it coarse for small networks.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StoredSize:
    stored_bytes: int  # dense or sparse, whichever is smaller, per tensor
    dense_bytes: int  # every tensor dense
    parameters: int  # elements of weights and biases
    nonzero_parameters: int


def tensor_bytes(tensor: torch.Tensor) -> tuple[int, int]:
    """(stored, dense) bytes of one tensor."""
    if tensor.is_quantized:
        values = tensor.int_repr()
        if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            extra = tensor.q_per_channel_scales().numel() * 8  # float32 scale + int32 zero point
        else:
            extra = 8
        return _sparse_or_dense(values, values.element_size()) + extra, values.numel() * values.element_size() + extra
    dense = tensor.numel() * tensor.element_size()
    return _sparse_or_dense(tensor, tensor.element_size()), dense


def _sparse_or_dense(tensor: torch.Tensor, element: int) -> int:
    numel = tensor.numel()
    dense = numel * element
    if numel == 0 or not (tensor.is_floating_point() or tensor.dtype == torch.int8):
        return dense
    nonzero = int(torch.count_nonzero(tensor))
    rows = tensor.shape[0] if tensor.dim() > 1 else 1
    csr = nonzero * (element + 4) + (rows + 1) * 4
    bitmask = nonzero * element + (numel + 7) // 8
    return min(dense, csr, bitmask)


def stored_size(module: nn.Module) -> StoredSize:
    stored = dense = parameters = nonzero = 0
    for name, value in _flatten(module.state_dict()):
        s, d = tensor_bytes(value)
        stored, dense = stored + s, dense + d
        if name.endswith(("weight", "bias")) or "_packed_params" in name:
            values = value.int_repr() if value.is_quantized else value
            parameters += values.numel()
            nonzero += int(torch.count_nonzero(values))
    return StoredSize(stored, dense, parameters, nonzero)


def _flatten(state: dict):
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, (tuple, list)):  # quantised linear: (weight, bias)
            names = ("weight", "bias")
            for index, item in enumerate(value):
                if isinstance(item, torch.Tensor):
                    yield f"{name}.{names[index] if index < 2 else index}", item


def torch_peak_bytes(module: nn.Module, example: torch.Tensor) -> int:
    """Peak of live CPU allocations during one forward pass (PyTorch profiler memory events)."""
    from torch.profiler import ProfilerActivity, profile

    # Kineto (the profiler's engine) prints "profiler_start/stop" lines on every use at its highest
    # level (USDT, 5); it reads its level once, at its first use: 6 keeps it quiet unless a user set one
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.inference_mode():
        module(example)  # lazily built state (packed weights, caches) is not the forward's memory
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            module(example)
    current = peak = 0  # allocations (+) and frees (-, "[memory]" events) in time order
    for event in sorted(profiler.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def rss_growth_bytes(call, calls: int = 3) -> int:
    """Largest resident-set growth of this process while `call` runs `calls` times (sampled)."""
    import psutil

    process = psutil.Process()
    before = process.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.0002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _ in range(calls):
            call()
    finally:
        peak[0] = max(peak[0], process.memory_info().rss)
        done.set()
        sampler.join()
    return max(0, peak[0] - before)
