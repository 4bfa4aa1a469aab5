"""Benchmark: tuned TVM latency over PyTorch latency for one layer, and sweep points per minute.

    python benchmarks/tvm_vs_torch.py [--model resnet18-cifar] [--layer conv3] [--trials 32]
        [--channels 32..256:32] [--tuning-dir DIR]

Everything comes from one run on this machine: the ratio is of two medians measured back to
back, and the sweep rate counts tuning, compilation, checking and timing. Use a fresh
--tuning-dir (the default is a new temporary one) for the cost of tuning from scratch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

from advisor.cli.options import parse_channels  # noqa: E402
from advisor.measure.environment import environment  # noqa: E402
from advisor.model.layers import conv_layers, find_layer  # noqa: E402
from advisor.model.loading import load_model  # noqa: E402
from advisor.store.results import ResultStore  # noqa: E402
from advisor.measure.sweep import SweepSpec, run_sweep  # noqa: E402
from advisor.compile.targets import parse_target  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--channels", default="32..256:32")
    parser.add_argument("--tuning-dir", default=None)
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    target = parse_target("llvm", threads)
    layer = find_layer(conv_layers(load_model(args.model)), args.layer)
    counts = parse_channels(args.channels)
    scratch = tempfile.mkdtemp(prefix="advisor-bench-")
    tuning_dir = args.tuning_dir or os.path.join(scratch, "tuning_logs")

    with ResultStore(os.path.join(scratch, "bench.db")) as store:
        timings = {}
        for backend in ("tvm", "torch"):
            plan = SweepSpec(args.model, layer.input_shape, layer, counts, backend, target, args.trials, threads,
                             tuning_dir)
            started = time.perf_counter()
            summary = run_sweep(plan, store)
            timings[backend] = (time.perf_counter() - started, len(summary.measured), len(summary.failed))
        frame = store.frame()

    env = environment("llvm", threads)
    print(f"# {args.model} {args.layer} ({layer.module_path}), input {layer.input_shape}, target {target.name}")
    print(f"# {env['cpu_model']}, {threads} threads, TVM {env['tvm_version']}, torch {env['torch_version']}, "
          f"{args.trials} MetaSchedule trials per count")
    ok = frame[frame.status == "ok"].pivot(index="channels", columns="backend", values="median_ms")
    print(f"{'channels':>8} {'tvm ms':>10} {'torch ms':>10} {'tvm/torch':>10}")
    for channels, row in ok.iterrows():
        print(f"{channels:>8} {row.get('tvm', float('nan')):>10.4f} {row.get('torch', float('nan')):>10.4f} "
              f"{row.get('tvm', float('nan')) / row.get('torch', float('nan')):>10.2f}")
    for backend, (seconds, measured, failed) in timings.items():
        rate = measured / (seconds / 60) if seconds else float("nan")
        print(f"{backend}: {measured} points in {seconds:.1f} s = {rate:.2f} sweep points per minute"
              f"{f', {failed} failed' if failed else ''}")


if __name__ == "__main__":
    main()
