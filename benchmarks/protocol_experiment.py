"""How accurate and how costly each way of sweeping conv3 is, at several samples a point and orders.

A sequence of steps, each a sweep of every count 32..256 (PyTorch, one thread) or an active sweep:
  R<n>  reference: exhaustive, ascending, n samples a point, then second opinions on outliers and traps
  E<n>  exhaustive, ascending, one pass
  S<n>  exhaustive, shuffled order, one pass, then second opinions on its outliers only
  A<n>  active sweep in a fresh process (as `advisor sweep --strategy active --repeats n` runs)
Each step but the references is scored against the mean of the references just before and after
it: the share of counts within 10% (an active sweep: its model, on the counts it did not measure).

    .venv/bin/python benchmarks/protocol_experiment.py R9,E9,A9,A5,E5,R9 [--work DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TVM_NUM_THREADS", "1")


def _active(plan, database):
    import torch

    from advisor.learn.active import run_active_sweep
    from advisor.store.results import ResultStore

    torch.set_num_threads(1)
    with ResultStore(database) as store:
        outcome = run_active_sweep(plan, store)
    return outcome.seconds, outcome.measured, outcome.model


def main() -> None:
    import numpy as np
    import torch

    from advisor.learn.active import candidate_frame
    from advisor.learn.cost_model import WITHIN
    from advisor.store.results import usable
    from advisor.model.layers import conv_layers, find_layer
    from advisor.model.loading import load_model
    from advisor.learn.second_opinion import confirm
    from advisor.store.results import ResultStore
    from advisor.measure.sweep import SweepSpec, run_sweep
    from advisor.compile.targets import parse_target
    from advisor.board.timing import TimingPolicy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", help="comma-separated steps, e.g. R9,E9,A9,S9,R9 (references first and last)")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    steps = args.steps.split(",")
    if steps[0][0] != "R" or steps[-1][0] != "R" or any(s[0] not in "RESA" or not s[1:].isdigit() for s in steps):
        raise SystemExit("steps are R<n>, E<n>, S<n> or A<n>, the first and the last a reference R<n>")
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="advisor-protocols-"))
    work.mkdir(parents=True, exist_ok=True)
    counts = list(range(32, 257))
    loaded = load_model("resnet18-cifar")
    layer = find_layer(conv_layers(loaded), "conv3")

    def plan(samples: int) -> SweepSpec:
        return SweepSpec(loaded.label, loaded.input_shape, layer, counts, "torch", parse_target("llvm", 1), 0, 1,
                         str(work / "tuning_logs"), policy=TimingPolicy(repeats=samples))

    def latencies(store: ResultStore) -> np.ndarray:
        return usable(store.frame()).set_index("channels").min_ms.reindex(counts).to_numpy()

    results = []
    for index, step in enumerate(steps):
        kind, samples = step[0], int(step[1:])
        database = work / f"{index:02d}-{step}.db"
        if kind == "A":
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                seconds, measured, model = pool.submit(_active, plan(samples), database).result()
            unseen = ~np.isin(counts, measured)
            results.append({"step": step, "index": index, "seconds": seconds, "values": model.predict(
                candidate_frame(plan(samples), counts)), "scored": unseen, "note": f"{len(measured)} counts"})
        else:
            ordered = plan(samples)
            if kind == "S":
                ordered = replace(ordered, channels=[int(c) for c in np.random.default_rng(index).permutation(counts)])
            with ResultStore(database) as store:
                began = time.perf_counter()
                run_sweep(ordered, store)
                results.append({"step": step, "index": index, "seconds": time.perf_counter() - began,
                                "values": latencies(store), "scored": np.ones(len(counts), bool), "note": "one pass"})
                if kind in "RS":
                    second = confirm(ordered, store, traps=kind == "R")
                    results.append({**results[-1], "seconds": results[-1]["seconds"] + second.seconds,
                                    "values": latencies(store), "note": f"and second opinions on "
                                    f"{len(second.suspects)} {'suspects' if kind == 'R' else 'outliers'}"})
        print(f"{step}: {results[-1]['seconds']:.1f} s", flush=True)

    references = [r for r in results if r["step"][0] == "R" and r["note"] != "one pass"]
    print(f"\n# scored against the mean of the references (R, with second opinions) either side; {work}")
    for result in results:
        if result["step"][0] == "R":
            continue
        around = [r for r in references if r["index"] < result["index"]][-1:] + \
            [r for r in references if r["index"] > result["index"]][:1]
        reference = np.mean([r["values"] for r in around], axis=0)
        scored = result["scored"]
        ratio = result["values"][scored] / reference[scored]
        print(f"{result['step']:>4} {result['note']:<36} {result['seconds']:6.1f} s  within 10%: "
              f"{np.mean(np.abs(ratio - 1) <= WITHIN):6.1%}  median over the reference {np.median(ratio):.3f}")
    for before, after in zip(references, references[1:]):
        agree = np.mean(np.abs(after["values"] / before["values"] - 1) <= WITHIN)
        print(f"references {before['step']}@{before['index']} and {after['step']}@{after['index']}: within 10% of "
              f"each other on {agree:.1%} of counts")


if __name__ == "__main__":
    main()
