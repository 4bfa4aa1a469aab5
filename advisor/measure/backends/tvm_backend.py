"""TVM: MetaSchedule-tuned Relax, compiled and timed by TVM's runtime (here or on a board); a
compiled network exported with its weights as an artifact that the runtime alone runs."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from advisor.board.runtime import check_and_time, first_output
from advisor.board.timing import Timing, TimingPolicy, calls_per_sample, steady_allocator
from advisor.compile.build import compile_layer, compile_network, network_reference
from advisor.compile.quiet import native_stderr_silenced
from advisor.compile.relax_import import to_relax
from advisor.compile.tuning import ScheduleCache
from advisor.errors import AdvisorError, one_line
from advisor.measure.backends.base import TOLERANCES, Backend, Unavailable, WrongOutput
from advisor.measure.memory import rss_growth_bytes
from advisor.measure.threads import set_tvm_threads

log = logging.getLogger(__name__)


class TvmBackend(Backend):
    name = "tvm"
    title = "TVM (MetaSchedule-tuned)"
    tuned = True

    def measure_layer(self, spec, variant) -> dict:
        """Tune (or reuse), compile, check against PyTorch, and time one layer variant; a spec with a
        `remote` (advisor.board.rpc.Remote) runs both the tuning measurements and this one on a board."""
        remote = spec.remote
        cache = ScheduleCache(spec.tuning_root, spec.target)
        compiled = compile_layer(variant, spec.trials, cache, spec.cost_model, spec.dtype,
                                 runner=remote.tuning_runner() if remote else None)
        outcome = compiled.outcome
        tuning = {"trials_run": outcome.trials_run, "tuning_seconds": outcome.seconds,
                  "schedules_reused": int(outcome.reused)}
        tolerance = TOLERANCES[spec.dtype]
        if remote is not None:
            return {**remote.measure(compiled.executable, compiled.inputs, compiled.reference, tolerance,
                                     spec.policy, spec.target.kind), **tuning}
        import tvm
        from tvm import relax

        if not spec.target.is_gpu:
            set_tvm_threads(spec.threads)  # the threads the row says, whoever called
        device = spec.target.device()
        vm = relax.VirtualMachine(compiled.executable, device)
        args = [tvm.runtime.tensor(array, device) for array in compiled.inputs]
        try:
            result = check_and_time(vm, device, args, compiled.reference, tolerance, spec.policy)
        except ValueError as error:
            raise WrongOutput(str(error)) from None
        if spec.target.kind == "cuda":  # VM-launch timing replaced by CUDA-graph replays of the same calls
            result |= _cuda_graph_timing(lambda: first_output(vm["main"](*args)), spec.policy)
        return {**result, **tuning}

    def network(self, module, example, target, *, tuning_root="tuning_logs", trials=0, cost_model="xgb"):
        return TvmNetwork(module, example, ScheduleCache(tuning_root, target), trials, cost_model)

    def export_networks(self, networks, example, directory, target, policy, threads):
        """One shared library per network (`export_library`), its inputs (the example and the
        module's weights, in the order `main` takes them) with PyTorch's output in an .npz, and
        manifest.json in the bundle format (format advisor-network), so that `advisor measure` and
        `python -m advisor.board.measure` check and time each network with TVM's runtime alone."""
        from advisor.board.measure import MANIFEST_FILE

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        points = []
        for name, (network, module) in networks.items():
            _mod, weights = to_relax(module, example)
            # TVM's runtime logs a warning for every memory scope an executable saves (a leftover
            # LOG(WARNING) in vm/executable.cc): nothing a user can act on
            with native_stderr_silenced():
                network.executable.export_library(str(directory / f"{name}.so"))
            arguments = ["x", *(f"w{i}" for i in range(len(weights)))]
            np.savez(directory / f"{name}.npz", reference=network_reference(module, example),
                     **dict(zip(arguments, [example.numpy(), *weights])))
            points.append({"key": {"network": name}, "columns": {"network": name, "threads": threads},
                           "library": f"{name}.so", "inputs": f"{name}.npz", "arguments": arguments,
                           "tolerance": TOLERANCES["float32"]})
        manifest = {"format": ARTIFACT_FORMAT, "version": 1, "target_kind": target.kind, "target": target.name,
                    "target_config": target.config, "input_shape": list(example.shape), "policy": asdict(policy),
                    "points": points}
        path = directory / MANIFEST_FILE
        path.write_text(json.dumps(manifest, indent=1))
        return path


ARTIFACT_FORMAT = "advisor-network"


def _cuda_graph_timing(call, policy: TimingPolicy) -> dict:
    from advisor.measure.cuda_timing import time_cuda

    try:
        timing, method = time_cuda(call, policy, tvm_stream=True)
    except Exception as error:  # keep the runtime evaluator's numbers
        log.warning("CUDA-graph timing failed (%s): runtime evaluator's timing kept", one_line(error, 200))
        return {}
    log.info("timed by %s", method)
    return timing.to_dict()


class TvmNetwork:
    """A whole network tuned to `trials` per kernel (reusing the cache), compiled and loaded; its
    first calls give its output (checked against PyTorch's) and its memory."""

    def __init__(self, module: torch.nn.Module | torch.export.ExportedProgram, example: torch.Tensor,
                 cache: ScheduleCache, trials: int, cost_model: str = "xgb") -> None:
        import tvm
        from tvm import relax

        try:
            compiled = compile_network(module, example, cache, trials, cost_model)
        except AdvisorError as error:
            if example.dtype == torch.float16:  # TVM 0.27's importer makes convolutions output float32
                raise Unavailable("TVM cannot import a float16 PyTorch model (its importer makes convolutions "
                                  "output float32, which then meets float16 tensors)") from None
            raise Unavailable(str(error)) from None
        self.device = cache.target.device()
        self.executable = compiled.executable
        self.vm = relax.VirtualMachine(compiled.executable, self.device)
        self.args = [tvm.runtime.tensor(array, self.device) for array in compiled.inputs]
        self.tuning_seconds = compiled.outcome.seconds
        first = {}
        self.peak_bytes = rss_growth_bytes(lambda: first.setdefault("out", self.vm["main"](*self.args)))
        output = first_output(first["out"]).numpy().astype(np.float32)
        self.max_abs_err = float(np.abs(output - compiled.reference).max())

    def time(self, policy: TimingPolicy, threads: int) -> Timing:
        set_tvm_threads(threads)
        call = lambda: self.vm["main"](*self.args)  # noqa: E731
        steady_allocator()
        for _ in range(policy.warmup):
            call()
        number = calls_per_sample(call, policy, self.device.sync)
        samples = self.vm.time_evaluator("main", self.device, number=number, repeat=policy.repeats)(*self.args)
        return Timing.from_samples([s * 1e3 for s in samples.results], number)

    def peak(self) -> tuple[int | None, str]:
        return self.peak_bytes, "rss-growth-first-calls"
