"""Benchmark of the cost model, the active sweep and `recommend`, from one run.

Prints:
  1. held-out accuracy of the XGBoost model fitted on an exhaustive sweep (every count 32..256,
     with second opinions on suspects), over five random 20% hold-outs, and without the second
     opinions;
  2. for --active-runs active sweeps (3), each from an empty database in a fresh process (as
     `advisor sweep` runs) and each followed by another exhaustive sweep: the time it took against
     the two exhaustive sweeps around it, with and without their second opinions, and how well its
     model predicts the counts it did not measure, against either of those sweeps, their mean, and
     the mean of all exhaustive sweeps; and how well consecutive exhaustive sweeps agree (the
     accuracy of measuring every count), with and without second opinions. The machine's speed
     drifts by several percent within minutes, so the sweeps around an active one are its
     reference. Then the time against an exhaustive sweep at the same accuracy: the cheapest of
     three ways of measuring every count (one pass; one pass and second opinions on its outliers,
     the points more than 10% above a k-fold model, the rule an active sweep applies to its own
     points; those and second opinions on its traps too, as `advisor sweep` runs by default) whose
     median score, scored as the active sweeps are, is at least the active sweeps' median
     (at_same_accuracy);
  3. recommended against uniform pruning at equal parameters, and predicted against measured.

Backend: PyTorch (oneDNN) on this CPU with one thread (MetaSchedule tuning of 225 counts does
not fit on a 2-core machine; the TVM path is the same code with --backend tvm).

    .venv/bin/python benchmarks/cost_model_bench.py [--layer conv3] [--input 1x3x64x64] [--budget-ms 20]
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from advisor.measure.sweep import SweepSpec

os.environ.setdefault("TVM_NUM_THREADS", "1")


# The heavy imports live inside the functions: a spawned process imports this file first, and an
# active sweep's second-opinion process would spend seconds importing what it does not use.

def _progress(show: bool):
    """A live bar (or a line a point) on stderr, or nothing."""
    from rich.console import Console

    from advisor.progress import SILENT
    from advisor.report.progress import ConsoleProgress

    return ConsoleProgress(Console(stderr=True)) if show else SILENT


def _active_sweep_here(plan: SweepSpec, database: Path, accuracy: float, second_opinions: bool = True):
    import torch

    from advisor.learn.active import run_active_sweep
    from advisor.store.results import ResultStore

    torch.set_num_threads(1)
    if plan.target.kind == "cuda":  # start CUDA and cuDNN before the clock, as the exhaustive sweeps' process has
        torch.nn.functional.conv2d(torch.zeros(1, 8, 8, 8, device="cuda"), torch.zeros(8, 8, 3, 3, device="cuda"))
        torch.cuda.synchronize()
    with ResultStore(database) as store:
        return run_active_sweep(plan, store, accuracy=accuracy, second_opinions=second_opinions)


def active_sweep(plan: SweepSpec, database: Path, accuracy: float, fresh: bool, second_opinions: bool):
    """One active sweep from an empty database; `fresh`: in a new process, as the CLI runs it, so that
    its time includes what a user waits for (importing xgboost, the first fits)."""
    if not fresh:
        return _active_sweep_here(plan, database, accuracy, second_opinions)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_active_sweep_here, plan, database, accuracy, second_opinions).result()


def at_same_accuracy(active: float, modes: list[tuple[str, float, list[float]]], shares: list[float]) -> None:
    """Print the time against an exhaustive sweep at the active sweeps' accuracy: the cheapest way of
    measuring every count (`modes`, cheapest first: name, median score scored as the active sweeps
    are, each active sweep's time ratio against it) whose median score is at least theirs; if none
    is, the most accurate one, a lower bound of the time one at their accuracy would take."""
    import numpy as np

    reached = [mode for mode in modes if mode[1] >= active]
    name, _, chosen = reached[0] if reached else modes[-1]
    if not reached:
        name = f"none reached it; {name}, the most accurate, as a lower bound"
    both = sum(r >= 10 and a >= 0.95 for r, a in zip(chosen, shares))
    scores = ", ".join(f"{mode} {score:.1%}" for mode, score, _ in modes)
    print(f"against an exhaustive sweep at the same accuracy (median within 10% of the sweeps around: active "
          f"{active:.1%}; exhaustive {scores}; so {name}): {np.median(chosen):.1f}x less time (range "
          f"{min(chosen):.1f}-{max(chosen):.1f}); {both} of {len(chosen)} met both targets", flush=True)


def main() -> None:
    import numpy as np
    import pandas as pd
    import torch

    from advisor.learn.cost_model import WITHIN, evaluate
    from advisor.store.results import usable
    from advisor.measure.environment import device_name
    from advisor.model.layers import conv_layers, find_layer
    from advisor.model.loading import load_model
    from advisor.prune.recommend import RecommendConfig, recommend
    from advisor.learn.second_opinion import confirm
    from advisor.store.results import ResultStore
    from advisor.measure.sweep import SweepSpec, run_sweep
    from advisor.compile.targets import parse_target
    from advisor.board.timing import TimingPolicy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--channels", default="32..256")
    parser.add_argument("--input", default="1x3x64x64", help="input of the network that recommend prunes")
    parser.add_argument("--budget-ms", type=float, default=20.0)
    parser.add_argument("--accuracy", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--active-runs", type=int, default=3, help="active sweeps, each from an empty database")
    parser.add_argument("--target", default="llvm", help="llvm (this CPU, one thread), cuda, or a TVM tag")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-recommend", action="store_true", help="skip part 3 (e.g. on a GPU, where a "
                        "batch-1 network is bound by kernel launches)")
    parser.add_argument("--active-process", choices=("fresh", "same"), default="fresh",
                        help="run each active sweep in a fresh process, as `advisor sweep` runs (default), or in "
                        "this one, which has imported everything already")
    parser.add_argument("--no-second-opinions", action="store_true", help="no sweep gives second opinions")
    parser.add_argument("--active-second-opinions", choices=("on", "off", "alternate"), default="on",
                        help="whether active sweeps give their own second opinions (alternate: odd sweeps do, even "
                        "ones do not, to compare them under the same conditions)")
    parser.add_argument("--order", choices=("shuffled", "ascending"), default="shuffled",
                        help="the order in which exhaustive sweeps measure their counts: shuffled (default), so that a "
                        "slow spell of the machine falls on scattered counts, which second opinions on outliers catch, "
                        "instead of on a run of neighbours that looks like a step; or ascending, as `advisor sweep` does")
    parser.add_argument("--work", default=None, help="folder for the databases (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="advisor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start, stop = (int(x) for x in args.channels.split(".."))
    counts = list(range(start, stop + 1))
    target = parse_target(args.target, 1)
    policy = TimingPolicy(repeats=args.repeats)
    loaded = load_model(args.model)
    layer = find_layer(conv_layers(loaded), args.layer)
    plan = SweepSpec(loaded.label, loaded.input_shape, layer, counts, "torch", target, 0, 1,
                     str(work / "tuning_logs"), dtype=args.dtype, policy=policy)
    print(f"# {args.model} {args.layer} ({layer.in_channels}->{layer.out_channels}, input "
          f"{'x'.join(map(str, layer.input_shape))}), torch on {target.name} {args.dtype}, 1 thread, {len(counts)} "
          f"counts, {args.repeats} samples a point, exhaustive sweeps in {args.order} order; work in {work}",
          flush=True)
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {device_name(target.kind)}, torch "
          f"{torch.__version__}, load average before: {os.getloadavg()[0]:.2f}", flush=True)

    second_opinions = not args.no_second_opinions

    def exhaustive_sweep(database: Path, show: bool, seed: int) -> dict:
        """Every count (in --order), then (unless --no-second-opinions) second opinions: first on the outliers (more
        than 10% above a k-fold model), then on the traps too; the time and values after each stage kept
        apart, to tell what each bought."""
        def latencies(frame: pd.DataFrame) -> pd.Series:
            return frame.set_index("channels").min_ms.reindex(counts)

        ordered = plan if args.order == "ascending" else \
            replace(plan, channels=[int(c) for c in np.random.default_rng(seed).permutation(counts)])
        with ResultStore(database) as store:
            began = time.perf_counter()
            run_sweep(ordered, store, _progress(show))
            first_s = time.perf_counter() - began
            first_runs = usable(store.frame())
            outliers = confirm(ordered, store, traps=False) if second_opinions else None
            outlier_s = time.perf_counter() - began
            outlier_ms = latencies(usable(store.frame()))
            second = confirm(ordered, store) if second_opinions else None
            rows = usable(store.frame())
        return {"seconds": time.perf_counter() - began, "first_seconds": first_s, "outlier_seconds": outlier_s,
                "outliers": outliers, "second": second, "rows": rows, "ms": latencies(rows),
                "outlier_ms": outlier_ms, "first_ms": latencies(first_runs), "first_rows": first_runs}

    first = exhaustive_sweep(work / "exhaustive.db", True, 0)
    exhaustive, first_runs, second = first["rows"], first["first_rows"], first["second"]
    outliers = first["outliers"]
    print(f"exhaustive sweep: {len(counts)} counts in {first['seconds']:.1f} s" + (
        f", of which second opinions {outliers.seconds + second.seconds:.1f} s: {outliers.seconds:.1f} s on "
        f"{len(outliers.suspects)} outliers ({len(outliers.changed)} were faster the second time), then "
        f"{second.seconds:.1f} s on {len(second.suspects)} traps ({len(second.changed)} faster)" if second else
        ", no second opinions"), flush=True)
    fitted = (("first runs only", first_runs), ("with second opinions", exhaustive)) if second else \
        (("one run a count", exhaustive),)
    for label, frame in fitted:
        held = [evaluate(frame, test_share=0.2, seed=seed) for seed in range(5)]
        shares = [h.within_10pct for h in held]
        steps = [h.step_within_10pct for h in held if h.step_within_10pct is not None]
        print(f"fit on the exhaustive sweep ({label}): {held[0].train_points} train / {held[0].test_points} held "
              f"out, 5 random splits: within 10%: mean {np.mean(shares):.1%}, worst {min(shares):.1%} (target 95%); "
              f"MAPE {np.mean([h.mean_abs_pct_error for h in held]):.1f}%; at step positions "
              f"({sum(h.step_points for h in held)} held out in all): within 10% "
              f"{'-' if not steps else f'{np.mean(steps):.1%}'}", flush=True)

    # the search's path is chaotic (a 2% difference in one measurement can change which counts it
    # picks and when it stops), so one active sweep is one draw: several, each in its own database.
    # The machine's speed drifts by several percent over minutes (other tenants), so each active
    # sweep runs between two exhaustive sweeps and is scored against those, measured around it
    sweeps = [first]
    active = []
    for attempt in range(1, args.active_runs + 1):
        own_opinions = second_opinions and (args.active_second_opinions == "on" or
                                            (args.active_second_opinions == "alternate" and attempt % 2 == 1))
        outcome = active_sweep(plan, work / f"active-{attempt}.db", args.accuracy, args.active_process == "fresh",
                               own_opinions)
        with ResultStore(work / f"active-{attempt}.db") as store:
            active.append((outcome, usable(store.frame()).set_index("channels").min_ms))
        sweeps.append(exhaustive_sweep(work / f"exhaustive-{attempt}.db", False, attempt))
        print(f"active sweep {attempt}{'' if own_opinions else ' (no second opinions of its own)'}: "
              f"{len(outcome.measured)} of {len(counts)} counts in {outcome.seconds:.1f} s, "
              f"model {'settled' if outcome.reached else 'NOT settled'} at {args.accuracy:.0%}; then exhaustive "
              f"sweep {attempt + 1} ({sweeps[-1]['seconds']:.1f} s, first pass {sweeps[-1]['first_seconds']:.1f} s)",
              flush=True)

    def within(values: pd.Series, reference: pd.Series) -> float:
        return float((np.abs(values / reference - 1) <= WITHIN).mean())

    for index in range(1, len(sweeps)):
        before, after = sweeps[index - 1], sweeps[index]
        print(f"exhaustive sweeps {index} and {index + 1}: within 10% of each other on "
              f"{within(after['ms'], before['ms']):.1%} of counts (the accuracy of measuring every count; first "
              f"passes alone: {within(after['first_ms'], before['first_ms']):.1%}); the later over the earlier: "
              f"median {float((after['ms'] / before['ms']).median()):.3f}", flush=True)
    # an exhaustive sweep scored as the active ones are: against the mean of the sweeps around it (as kept,
    # with their second opinions), its first pass alone and with its second opinions
    exhaustive_scores, outlier_scores, first_pass_scores = [], [], []
    for index in range(1, len(sweeps) - 1):
        around = (sweeps[index - 1]["ms"] + sweeps[index + 1]["ms"]) / 2
        exhaustive_scores.append(within(sweeps[index]["ms"], around))
        outlier_scores.append(within(sweeps[index]["outlier_ms"], around))
        first_pass_scores.append(within(sweeps[index]["first_ms"], around))
        print(f"exhaustive sweep {index + 1}: within 10% of the mean of the sweeps around it on "
              f"{exhaustive_scores[-1]:.1%} of counts (first pass alone: {first_pass_scores[-1]:.1%}; with second "
              f"opinions on its outliers only: {outlier_scores[-1]:.1%})", flush=True)
    overall = sum(sweep["ms"] for sweep in sweeps) / len(sweeps)
    ratios, outlier_ratios, first_ratios, shares = [], [], [], []
    for attempt, (outcome, own) in enumerate(active, 1):
        sweep_before, sweep_after = sweeps[attempt - 1], sweeps[attempt]
        before, after = sweep_before["ms"], sweep_after["ms"]
        exhaustive_time = (sweep_before["seconds"] + sweep_after["seconds"]) / 2
        first_pass_time = (sweep_before["first_seconds"] + sweep_after["first_seconds"]) / 2
        outlier_time = (sweep_before["outlier_seconds"] + sweep_after["outlier_seconds"]) / 2
        unseen = exhaustive[~exhaustive.channels.isin(outcome.measured)]
        predicted = pd.Series(outcome.model.predict(unseen), index=unseen.channels.to_numpy())
        references = {"the sweep before": before, "the sweep after": after, "their mean": (before + after) / 2,
                      f"the mean of all {len(sweeps)} exhaustive sweeps": overall}
        scored = {}
        for name, reference in references.items():
            errors = np.abs(predicted / reference.reindex(predicted.index) - 1)
            scored[name] = (float((errors <= WITHIN).mean()), float(errors.mean() * 100))
        # a drift of a few percent between sweeps moves every prediction against the reference alike
        drift = float((own / references["their mean"].reindex(own.index)).median())
        ratios.append(exhaustive_time / outcome.seconds)
        first_ratios.append(first_pass_time / outcome.seconds)
        outlier_ratios.append(outlier_time / outcome.seconds)
        shares.append(scored["their mean"][0])
        figures = "; ".join(f"{name} {share:.1%} (MAPE {mape:.1f}%)" for name, (share, mape) in scored.items())
        against_first = (f" ({first_ratios[-1]:.1f}x less than their first passes alone, {first_pass_time:.1f} s; "
                         f"{outlier_ratios[-1]:.1f}x less than those and second opinions on their outliers, "
                         f"{outlier_time:.1f} s)") if second_opinions else ""
        print(f"active sweep {attempt}: {outcome.seconds:.1f} s against {exhaustive_time:.1f} s for the exhaustive "
              f"sweeps around it: {ratios[-1]:.1f}x less time{against_first}, "
              f"{len(counts) / len(outcome.measured):.1f}x fewer counts (target >= 10x); on the {len(unseen)} counts "
              f"it did not measure, within 10% of {figures}; its own measurements over the mean of the sweeps around "
              f"it: median {drift:.3f}", flush=True)
    if len(ratios) > 1:
        both = sum(r >= 10 and a >= 0.95 for r, a in zip(ratios, shares))
        print(f"active sweeps: median {np.median(ratios):.1f}x less time (range {min(ratios):.1f}-{max(ratios):.1f}), "
              f"median {np.median(shares):.1%} within 10% of the exhaustive sweeps around them (range "
              f"{min(shares):.1%}-{max(shares):.1%}); {both} of {len(ratios)} met both targets (>= 10x less time, >= "
              f"95% within 10%)" + (f"; against the exhaustive sweeps' first passes alone: median "
                                    f"{np.median(first_ratios):.1f}x (range {min(first_ratios):.1f}-"
                                    f"{max(first_ratios):.1f})" if second_opinions else ""), flush=True)
    if second_opinions and len(ratios) > 1 and exhaustive_scores:
        at_same_accuracy(np.median(shares), [("one pass", np.median(first_pass_scores), first_ratios),
                                             ("one pass and second opinions on its outliers",
                                              np.median(outlier_scores), outlier_ratios),
                                             ("one pass and second opinions on its outliers and traps",
                                              np.median(exhaustive_scores), ratios)], shares)

    if args.no_recommend:
        return
    network = load_model(args.model, args.input)
    setup = RecommendConfig(network, "torch", target, 0, 1, str(work / "tuning_logs"), policy)
    with ResultStore(work / "recommend.db") as store:
        result = recommend(setup, store, args.budget_ms)
    if not result.plan.met:
        print(f"recommend: budget {args.budget_ms} ms not met; fastest plan predicted {result.plan.predicted_ms:.2f} "
              f"ms (unpruned {result.unpruned_ms:.2f} ms)")
        sys.exit(1)
    print(f"recommend {args.model} {args.input} budget {args.budget_ms} ms: unpruned {result.unpruned_ms:.2f} ms; "
          f"recommended predicted {result.plan.predicted_ms:.2f} ms, measured {result.recommended_ms:.2f} ms "
          f"({result.recommended_ms / result.plan.predicted_ms - 1:+.1%}; at the machine's speed during the check, "
          f"the unpruned network reading {result.unpruned_ms:.2f} ms against {result.calibration_unpruned_ms:.2f} ms "
          f"at calibration, predicted {result.predicted_at_check_ms:.2f} ms: "
          f"{result.recommended_ms / result.predicted_at_check_ms - 1:+.1%}; within budget: "
          f"{result.recommended_ms <= args.budget_ms}; plans measured {result.attempts}); uniform at equal "
          f"parameters ({result.parameters['recommended']:,} vs {result.parameters['uniform']:,}): "
          f"{result.uniform_ms:.2f} ms; recommended / uniform = {result.recommended_ms / result.uniform_ms:.3f}; "
          f"{result.seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
