"""What a measurement ran on, stored beside every result."""

from __future__ import annotations

import functools
import os
import platform
import socket


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def versions() -> dict[str, str]:
    import torch

    try:  # PyTorch-backend sweeps run without TVM (a GPU box measuring cuDNN alone)
        import tvm

        tvm_version = tvm.__version__
    except ImportError:
        tvm_version = "not installed"
    return {"tvm_version": tvm_version, "torch_version": torch.__version__}


def device_name(kind: str) -> str:
    """The device a target of this kind runs on, in words."""
    if kind == "cuda":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
        return "cuda (none here)"
    if kind == "opencl":
        from advisor.board.runtime import device_for, device_words

        return device_words(kind, device_for(kind))
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def environment(kind: str, threads: int) -> dict[str, object]:
    return {
        "threads": threads,
        "cpu_model": cpu_model(),
        "device": device_name(kind),
        "hostname": socket.gethostname(),
        **versions(),
    }
