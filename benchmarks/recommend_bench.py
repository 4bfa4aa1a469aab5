"""Benchmark of `advisor recommend` on a trained network, against the baselines users have, from one run.

    python benchmarks/recommend_bench.py [--model resnet18-w16] [--data digits] [--input 1x3x32x32]
        [--budget 50%] [--backends torch,tvm] [--target llvm] [--trials 8] [--threads 1]
        [--work out/recommend-bench] [--output data/cpu/recommend/torch-magnitude.txt]

For each backend, from an empty database and tuning directory in --work (kept: a rerun resumes from
every stored point and network timing, and adds its time to the earlier sessions'), it recommends
counts for the budget, with the built-in network trained on the data set (once, cached) and every
network fine-tuned by the same recipe, and prints: each network's measured latency (unpruned,
recommended, Torch-Pruning at one ratio, the same with round_to=8: measured side by side) and
accuracy, the plan's predicted against measured latency, the ratios, the recommendation's time,
and then, at equal accuracy, how much faster the recommended network runs than uniform pruning:
the uniform networks (Torch-Pruning at one keep ratio) from the budget's ratio upwards, fine-tuned
alike, until one is at least as accurate as the recommended one, which is then timed beside it.
Each target is printed as met or MISSED with its figure:
  - measured within budget, and within 10% of the prediction (at the machine's speed during the check);
  - the recommended network at least as accurate as both uniform baselines at the same budget;
  - for a budget of half the unpruned latency, at most 0.5 points of accuracy lost;
  - at equal accuracy, at least 1.3x faster than uniform pruning;
  - a tuned-TVM recommendation under 60 minutes on this machine (from an empty database).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")

WITHIN_PREDICTION = 0.10
MAX_LOSS_AT_HALF = 0.005
EQUAL_ACCURACY_SPEEDUP = 1.3
TVM_MINUTES = 60


class Tee:
    """Print to stdout and to the output file as lines come."""

    def __init__(self, path: Path | None) -> None:
        self.file = open(path, "a", encoding="utf-8") if path else None

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        if self.file:
            self.file.write(text + "\n")
            self.file.flush()


def target_line(say, name: str, met: bool, figure: str) -> None:
    say(f"  target {name}: {'met' if met else 'MISSED'} ({figure})")


def session_seconds(work: Path, backend: str, seconds: float | None = None) -> float:
    """Seconds of earlier sessions of this backend's recommendation (a resumed run adds its own)."""
    path = work / "sessions.json"
    sessions = json.loads(path.read_text()) if path.is_file() else {}
    if seconds is not None:
        sessions[backend] = sessions.get(backend, 0.0) + seconds
        path.write_text(json.dumps(sessions))
    return sessions.get(backend, 0.0)


def run_backend(say, work: Path, backend: str, config, budget, scoring) -> None:
    """One recommendation, its comparison at equal accuracy, and the targets."""
    from rich.console import Console

    from advisor.measure.threads import torch_threads
    from advisor.model.training import FINETUNE_ONE_CYCLE, finetuned_network
    from advisor.prune.groups import architecture, torch_pruning_uniform
    from advisor.prune.journal import Journal
    from advisor.prune.recommend import KEEP_STEP, Recommender
    from advisor.report.progress import ConsoleProgress
    from advisor.store.results import ResultStore

    earlier = session_seconds(work, backend)
    started = time.perf_counter()
    with ResultStore(work / f"{backend}.db") as store:
        # one line per measured width with the time left on stderr (a tuned backend's layers take minutes)
        recommender = Recommender(config, store, budget, scoring=scoring,
                                  progress=ConsoleProgress(Console(stderr=True)),
                                  journal=Journal(work / f"{backend}.journal.json"))
        result = recommender.run()
        if not result.reachable:
            say(f"  budget not reachable: the fastest plan measured {result.fastest_ms:.3f} ms, "
                f"limit {result.budget_ms:.3f} ms")
            return
        artifact = recommender.export(result, work / f"{backend}-artifact")
        total = session_seconds(work, backend, time.perf_counter() - started)
        points = len(store.frame())
        networks = result.networks
        unpruned, recommended = networks["unpruned"], networks["recommended"]
        say(f"  {'network':<12} {'keep':>5} {'ms':>8} {'x unpruned':>10} {'acc before':>10} {'acc after':>9} "
            f"{'params':>9} {'MFLOPs':>7}")
        for name, n in networks.items():
            keep = "-" if n.keep_ratio is None else f"{n.keep_ratio:.2f}"
            say(f"  {name:<12} {keep:>5} {n.measured_ms:8.3f} {n.measured_ms / unpruned.measured_ms:10.3f} "
                f"{100 * n.score_before:9.2f}% {100 * n.score:8.2f}% {n.parameters:9,} {n.flops / 1e6:7.1f}")
        predicted, at_check = result.plan.predicted_ms, result.predicted_at_check_ms
        say(f"  budget {budget.text} = {result.budget_ms:.3f} ms beside the unpruned network; plan predicted "
            f"{predicted:.3f} ms ({at_check:.3f} ms at the machine's speed during the check), measured "
            f"{recommended.measured_ms:.3f} ms; {result.attempts} plan(s) measured; {result.fit_points} layer "
            f"widths measured ({points} points in the database)")
        for name in ("uniform", "uniform-r8"):
            n = networks[name]
            say(f"  recommended / {name}: latency {recommended.measured_ms / n.measured_ms:.3f}, accuracy "
                f"{100 * (recommended.score - n.score):+.2f} points"
                + ("" if n.within_budget else " (no keep ratio met the budget: the smallest measured)"))
        say(f"  recommendation took {total / 60:.1f} min" + (f" ({earlier / 60:.1f} in earlier sessions)"
                                                            if earlier else "")
            + (f"; artifact {artifact.parent}" if artifact else ""))

        # at equal accuracy: uniform networks from the budget's keep ratio upwards, fine-tuned alike,
        # until one is as accurate as the recommended network; that one timed beside it
        ratios = [round(1 - KEEP_STEP * i, 4) for i in range(int((1 - config.min_ratio) / KEEP_STEP + 1e-9) + 1)]
        equal = None
        with torch_threads(os.cpu_count()):
            for ratio in sorted(r for r in ratios if r >= networks["uniform"].keep_ratio):
                module = torch_pruning_uniform(recommender.module, recommender.example, ratio, config.importance,
                                               batches=recommender.batches)
                score = scoring.score(finetuned_network(module, scoring.dataset, scoring.finetune, scoring.seed,
                                                        recipe=FINETUNE_ONE_CYCLE))
                say(f"  uniform at keep ratio {ratio:.2f}: accuracy after fine-tuning {100 * score:.2f}%")
                if score >= recommended.score:
                    equal = (ratio, module, score)
                    break
        speedup = None
        if equal is None:
            say("  no uniform network up to the unpruned one is as accurate as the recommended one")
        else:
            ratio, module, score = equal
            same = architecture(module) == architecture(recommender.module)
            readings = recommender.measure([recommender.module, recommended.module, module],
                                           f"equal accuracy: uniform {ratio:.2f}")
            speedup = readings[2] / readings[1]
            say(f"  at equal accuracy: uniform at keep ratio {ratio:.2f} ({100 * score:.2f}%"
                f"{', the unpruned network' if same else ''}) {readings[2]:.3f} ms against the recommended "
                f"{readings[1]:.3f} ms beside each other: {speedup:.2f}x")

    share = recommended.measured_ms / unpruned.measured_ms
    target_line(say, "within budget", recommended.measured_ms <= result.budget_ms,
                f"{recommended.measured_ms:.3f} ms against {result.budget_ms:.3f} ms, {share:.3f} of unpruned")
    error = recommended.measured_ms / at_check - 1
    target_line(say, f"within {WITHIN_PREDICTION:.0%} of the prediction", abs(error) <= WITHIN_PREDICTION,
                f"{error:+.1%} against the prediction at the check's speed, "
                f"{recommended.measured_ms / predicted - 1:+.1%} against the raw prediction")
    for name in ("uniform", "uniform-r8"):
        gap = recommended.score - networks[name].score
        target_line(say, f"accuracy at least {name}'s", gap >= 0, f"{100 * gap:+.2f} points")
    if budget.share is not None and abs(budget.share - 0.5) < 1e-9:
        loss = unpruned.score - recommended.score
        target_line(say, "at most 0.5 points lost at half the latency", loss <= MAX_LOSS_AT_HALF,
                    f"{100 * loss:.2f} points lost")
    target_line(say, f"at equal accuracy at least {EQUAL_ACCURACY_SPEEDUP}x faster than uniform",
                speedup is not None and speedup >= EQUAL_ACCURACY_SPEEDUP,
                "no uniform network as accurate" if speedup is None else f"{speedup:.2f}x")
    if config.trials and recommender.tuned:
        target_line(say, f"tuned-TVM recommendation under {TVM_MINUTES} min", total / 60 < TVM_MINUTES,
                    f"{total / 60:.1f} min from an empty database")


def main() -> None:
    import logging

    import torch

    from advisor.board.timing import TimingPolicy
    from advisor.compile.targets import parse_target
    from advisor.measure.backends import get_backend
    from advisor.measure.environment import environment
    from advisor.measure.threads import use_threads
    from advisor.model.loading import load_model
    from advisor.model.training import FINETUNE_ONE_CYCLE
    from advisor.prune.recommend import RecommendConfig, Scoring, parse_budget, with_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-w16")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--input", default="1x3x32x32")
    parser.add_argument("--budget", default="50%", help="ms, or a share of the unpruned latency")
    parser.add_argument("--backends", default="torch,tvm")
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--cost-model", default="xgb", help="MetaSchedule's: xgb or random")
    parser.add_argument("--importance", default="magnitude", help="Torch-Pruning criterion (taylor: gradients)")
    parser.add_argument("--min-ratio", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--tuned-samples", type=int, default=3, help="--samples on a tuned backend (each "
                        "width measured is a tuning)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune", type=int, default=3)
    parser.add_argument("--work", default="out/recommend-bench", help="databases, tuning logs and journals")
    parser.add_argument("--output", default=None, help="also append the output to this file")
    parser.add_argument("--command", default=None, help="the command line to record (default: this one)")
    args = parser.parse_args()

    logging.getLogger("advisor").setLevel(logging.INFO)
    logging.basicConfig(level=logging.WARNING, format="  | %(message)s")
    logging.getLogger("advisor").handlers = [logging.StreamHandler(sys.stderr)]
    for name in ("tvm", "torch", "torch_pruning"):
        logging.getLogger(name).setLevel(logging.ERROR)

    say = Tee(Path(args.output) if args.output else None)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    threads = use_threads(args.threads)
    target = parse_target(args.target, threads)
    budget = parse_budget(args.budget)
    env = environment(target.kind, threads)
    say(f"# {args.command or 'python ' + ' '.join(sys.argv)}")
    say(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {env.get('cpu_model') or platform.processor()}"
        f" ({os.cpu_count()} cores), {threads} thread(s) measured, training on all cores; torch "
        f"{torch.__version__}, tvm {env.get('tvm_version')}, load average {os.getloadavg()[0]:.2f}")
    loaded, dataset = with_data(load_model(args.model, args.input), args.data, args.epochs,
                                announce=lambda m: say(f"# {m}"))
    say(f"# {args.model} {args.input} trained {args.epochs} epochs on {dataset.name} "
        f"({len(dataset.y_train)} training, {len(dataset.y_test)} held-out images); every network fine-tuned "
        f"{args.finetune} epochs ({FINETUNE_ONE_CYCLE.schedule}, lr {FINETUNE_ONE_CYCLE.lr:g}); budget {budget.text}")
    scoring = Scoring(dataset, args.finetune)
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        say()
        config = RecommendConfig(loaded, backend, target, args.trials, threads, str(work / "tuning_logs"),
                                 TimingPolicy(repeats=args.repeats),
                                 args.tuned_samples if get_backend(backend).tuned else args.samples,
                                 min_ratio=args.min_ratio, importance=args.importance, cost_model=args.cost_model)
        tuned = config.trials if get_backend(backend).tuned else 0
        say(f"## {backend} on {target.name}" + (f", {tuned} MetaSchedule trials per convolution, "
                                                  f"{config.samples} sampled widths" if tuned else ""))
        run_backend(say, work, backend, config, budget, scoring)


if __name__ == "__main__":
    main()
