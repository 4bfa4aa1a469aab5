"""Benchmark: does seeding a channel count's tuning with its neighbour's schedules pay?

    python benchmarks/transfer_bench.py [--model resnet18-cifar] [--layer conv3] [--source 64]
        [--counts 65,72,96] [--source-trials 32] [--few 8] [--full 32] [--seeds 0,1]

Tunes the layer at `--source` channels from scratch with `--source-trials` trials, then for each
neighbour count compares four arms, each in its own tuning directory (no shared records):
  scratch-few   from scratch, `--few` trials (no neighbours in its database)
  transfer-few  a copy of the source's database: its best schedules replayed, measured, then
                the search, `--few` trials in all
  scratch-full  from scratch, `--full` trials
  transfer-full a copy of the source's database, `--full` trials in all (a sweep's default)
and prints the tuning seconds and the compiled layer's latency (each output checked against
PyTorch). The arms of one count are timed interleaved (rounds of a few samples each, median of
the rounds) so that load from other processes falls on them alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
warnings.filterwarnings("ignore", category=FutureWarning)
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

from advisor.compile.build import layer_reference  # noqa: E402
from advisor.measure.backends import TOLERANCES  # noqa: E402
from advisor.measure.environment import environment  # noqa: E402
from advisor.model.layers import conv_layers, find_layer  # noqa: E402
from advisor.model.loading import load_model  # noqa: E402
from advisor.compile.relax_import import to_relax  # noqa: E402
from advisor.board.runtime import check_and_time  # noqa: E402
from advisor.compile.targets import parse_target  # noqa: E402
from advisor.board.timing import TimingPolicy  # noqa: E402
from advisor.compile.tuning import ScheduleCache, compile_tuned, tune  # noqa: E402

ROUNDS = 5
ROUND_POLICY = TimingPolicy(warmup=3, repeats=5)


def tune_and_build(layer, target, trials: int, directory: str, transfer: bool, seed: int):
    """Tune (in `directory`) and compile one variant: (outcome, best µs transferred and searched,
    a function that checks and times it once: median ms)."""
    import tvm
    from tvm import relax

    conv, x = layer.build()
    mod, weights = to_relax(conv, x)
    cache = ScheduleCache(directory, target)
    outcome = tune(mod, cache, trials, transfer=transfer, seed=seed)
    vm = relax.VirtualMachine(compile_tuned(mod, cache), tvm.cpu())
    args = [tvm.runtime.tensor(array) for array in [x.numpy(), *weights]]
    reference = layer_reference(conv, x)
    timer = lambda: check_and_time(vm, tvm.cpu(), args, reference, TOLERANCES["float32"], ROUND_POLICY)["median_ms"]  # noqa: E731
    return outcome, tuned_run_times(cache.directory, outcome.transferred), timer


def tuned_run_times(cache_directory: str, transferred: int) -> tuple[float, float, int]:
    """Best run time (µs, as MetaSchedule measured it) of the tuned variant's transferred candidates
    and of its searched ones, and how many of its records repeat an earlier one's trace (measured
    twice). Its records are the newest workload's, committed in order, the transferred ones first."""
    records = [json.loads(line) for line in open(os.path.join(cache_directory, "database_tuning_record.json"))]
    newest = max(workload for workload, _ in records)
    mine = [record for workload, record in records if workload == newest]
    times = [min(record[1]) * 1e6 for record in mine]
    best = lambda values: min((t for t in values if t < 1e9), default=float("nan"))  # noqa: E731 (1e10: failed)
    repeated = len(mine) - len({json.dumps(record[0]) for record in mine})
    return best(times[:transferred]), best(times[transferred:]), repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--source", type=int, default=64)
    parser.add_argument("--counts", default="65,72,96")
    parser.add_argument("--source-trials", type=int, default=32)
    parser.add_argument("--few", type=int, default=8)
    parser.add_argument("--full", type=int, default=32)
    parser.add_argument("--seeds", default="0,1", help="tuning seeds for the two few-trial arms, e.g. 0,1")
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    target = parse_target("llvm", threads)
    layer = find_layer(conv_layers(load_model(args.model)), args.layer)
    scratch = tempfile.mkdtemp(prefix="advisor-transfer-")
    source_dir = os.path.join(scratch, "source")
    env = environment("llvm", threads)
    print(f"# {args.model} {args.layer} ({layer.module_path}), input {layer.input_shape}, "
          f"{layer.in_channels}->c {layer.kernel[0]}x{layer.kernel[1]}, target {target.name}")
    print(f"# {env['cpu_model']}, {threads} threads, TVM {env['tvm_version']}, torch {env['torch_version']}")

    print("# best µs: the best candidate's run time as MetaSchedule measured it while tuning, among the "
          "transferred ones and among the searched ones; twice: records whose schedule was measured before "
          "(the search re-measuring a database record); median ms: the compiled layer, timed interleaved")
    print(f"{'c':>4} {'arm':<14} {'seed':>4} {'trials':>6} {'transferred':>11} {'tuning s':>9} "
          f"{'best µs transf.':>15} {'best µs search':>14} {'twice':>5} {'median ms':>10}")
    source = ("source", 0, *tune_and_build(layer.with_out_channels(args.source), target, args.source_trials,
                                           source_dir, transfer=False, seed=0))
    report(args.source, [source], [[source[-1]() for _ in range(ROUNDS)]])
    seeds = [int(s) for s in args.seeds.split(",")]
    for count in (int(c) for c in args.counts.split(",")):
        variant = layer.with_out_channels(count)
        arms = []
        for seed in seeds:
            arms.append(("scratch-few", seed, *tune_and_build(
                variant, target, args.few, os.path.join(scratch, f"few-{count}-{seed}"), False, seed)))
            copy = shutil.copytree(source_dir, os.path.join(scratch, f"transfer-{count}-{seed}"))
            arms.append(("transfer-few", seed, *tune_and_build(variant, target, args.few, copy, True, seed)))
        arms.append(("scratch-full", 0, *tune_and_build(
            variant, target, args.full, os.path.join(scratch, f"full-{count}"), False, 0)))
        copy = shutil.copytree(source_dir, os.path.join(scratch, f"transfer-full-{count}"))
        arms.append(("transfer-full", 0, *tune_and_build(variant, target, args.full, copy, True, 0)))
        report(count, arms, [[time_it() for *_, time_it in arms] for _ in range(ROUNDS)])  # interleaved
    shutil.rmtree(scratch, ignore_errors=True)


def report(count: int, arms: list, rounds: list[list[float]]) -> None:
    for i, (name, seed, outcome, (transferred_us, searched_us, twice), _) in enumerate(arms):
        median = statistics.median(r[i] for r in rounds)
        print(f"{count:>4} {name:<14} {seed:>4} {outcome.trials_run:>6} {outcome.transferred:>11} "
              f"{outcome.seconds:>9.1f} {transferred_us:>15.1f} {searched_us:>14.1f} {twice:>5} {median:>10.4f}",
              flush=True)


if __name__ == "__main__":
    main()
