"""PyTorch eager: oneDNN on the CPU, cuDNN on CUDA (timed by CUDA-graph replays and events)."""

from __future__ import annotations

import torch

from advisor.board.timing import Timing, TimingPolicy, time_callable
from advisor.errors import AdvisorError
from advisor.measure.backends.base import Backend
from advisor.measure.memory import torch_peak_bytes
from advisor.measure.threads import torch_threads

_NOT_TUNED = {"max_abs_err": 0.0, "trials_run": 0, "tuning_seconds": 0.0, "schedules_reused": 0}


class TorchBackend(Backend):
    name = "torch"
    title = "PyTorch eager"
    tuned = False

    def check_target(self, target) -> None:
        if target.kind == "opencl":
            raise AdvisorError("PyTorch has no OpenCL backend: use --backend tvm for opencl")

    def second_opinion_in_fresh_process(self, target) -> bool:
        # cuDNN (with cudnn.benchmark) picks its algorithm once per shape and process
        return target.kind == "cuda"

    def measure_layer(self, spec, variant) -> dict:
        conv, x = variant.build(dtype=spec.dtype)
        if spec.target.kind == "cuda":
            from advisor.measure.cuda_timing import time_cuda

            _cudnn_as_deployed()
            conv, x = conv.cuda(), x.cuda()
            with torch.inference_mode():
                timing, _method = time_cuda(lambda: conv(x), spec.policy)
            return {**timing.to_dict(), **_NOT_TUNED}
        with torch_threads(spec.threads), torch.inference_mode():  # the threads the row says
            timing = time_callable(lambda: conv(x), spec.policy)
        return {**timing.to_dict(), **_NOT_TUNED}

    def network(self, module, example, target, *, tuning_root="tuning_logs", trials=0, cost_model="xgb"):
        self.check_target(target)
        return TorchNetwork(module, example, target.kind == "cuda")


def _cudnn_as_deployed() -> None:
    torch.backends.cudnn.benchmark = True  # cuDNN picks its fastest algorithm, as deployments do
    torch.backends.cudnn.allow_tf32 = False  # float32 means fp32 arithmetic, as TVM's kernels do


class TorchNetwork:
    max_abs_err = None
    tuning_seconds = 0.0

    def __init__(self, module: torch.nn.Module, example: torch.Tensor, cuda: bool = False) -> None:
        self.module, self.example, self.cuda = module.eval(), example, cuda
        self.sync = lambda: None
        if cuda:  # a copy on the device: the caller's module stays where it is (it may be trained next)
            import copy

            _cudnn_as_deployed()
            self.module, self.example, self.sync = copy.deepcopy(module).cuda(), example.cuda(), torch.cuda.synchronize

    def time(self, policy: TimingPolicy, threads: int) -> Timing:
        with torch_threads(threads), torch.inference_mode():
            return time_callable(lambda: self.module(self.example), policy, self.sync)

    def peak(self) -> tuple[int | None, str]:
        if self.cuda:
            return None, "not measured on CUDA"
        return torch_peak_bytes(self.module, self.example), "torch-profiler-allocations"
