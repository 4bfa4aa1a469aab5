"""Replay the active sweep's decisions against recorded exhaustive sweeps.

For each curve (one series of a results database with every count of a range measured), the
active search picks counts as it would live, but reads their latency from the recording; at the
stop it prints how many counts it used and how well its model predicts the counts it never
picked. No measuring, so strategies can be compared on many curves in seconds; the live figures
come from benchmarks/cost_model_bench.py. The search's path is sensitive to small differences
in the measurements, so --noise replays each curve again with every latency multiplied by
exp(N(0, noise)) (--seeds times): a strategy that only looks good on one recording shows here.

    .venv/bin/python benchmarks/active_replay.py data/*/curves/*.csv.gz [--noise 0.02 --seeds 4]

Curves are results databases or their CSV exports (`advisor show --format csv`, or the
data/*/curves/ files).

Added noise is independent from count to count; a live machine's is not (its speed drifts for
seconds to minutes, and a kernel can run slow for a whole process). --repeated takes folders
that each hold several exhaustive sweeps of one layer measured one after another (data/cpu/repeats/):
each replay reads every count from one of the sweeps chosen at random and scores the model
against the mean of the other sweeps at that count, so both the search and its score meet the
machine's own noise:

    .venv/bin/python benchmarks/active_replay.py --repeated data/cpu/repeats/* --seeds 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from advisor.learn.active import replay
from advisor.store.results import usable
from advisor.store.schema import SERIES
from advisor.store.results import ResultStore


def read_curves(path: str) -> pd.DataFrame:
    if path.endswith((".csv", ".csv.gz")):
        return usable(pd.read_csv(path))
    with ResultStore(path) as store:
        return usable(store.frame())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curves", nargs="+", help="results databases or CSV exports")
    parser.add_argument("--accuracy", type=float, default=0.95)
    parser.add_argument("--initial", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--explore", type=int, default=1, help="random picks per round")
    parser.add_argument("--min-points", type=int, default=None,
                        help="stop no earlier (default: the initial counts and three rounds)")
    parser.add_argument("--tile-prior", type=int, default=None,
                        help="the channel tile the recording's hardware suggests (16: float32 on AVX-512, as "
                             "data/cpu's CPUs; a live sweep takes it from its target)")
    parser.add_argument("--noise", type=float, default=0.0, help="relative measurement noise to add")
    parser.add_argument("--seeds", type=int, default=1, help="replays per curve (the first without noise)")
    parser.add_argument("--repeated", action="store_true",
                        help="each argument is a folder of repeated exhaustive sweeps of one series")
    args = parser.parse_args()
    options = {"accuracy": args.accuracy, "initial": args.initial, "batch": args.batch,
               "explore": args.explore, "min_points": args.min_points, "tile_prior": args.tile_prior}
    if args.repeated:
        replay_repeated(args.curves, args.seeds, options)
        return
    results = []
    for path in args.curves:
        for values, curve in read_curves(path).groupby(SERIES, sort=True, dropna=False):
            runs = []
            for seed in range(args.seeds):
                noisy = curve.copy()
                if seed and args.noise:
                    noise = np.random.default_rng(seed).normal(0, args.noise, len(curve))
                    noisy["min_ms"] = curve.min_ms * np.exp(noise)
                runs.append(replay(noisy, **options))
            results += runs
            counts = [r["measured"] for r in runs]
            within = [r["within"] for r in runs]
            print(f"{Path(path).name.split('.')[0]} ({values[2]} {values[3]} {values[4]} {values[5]}): {np.mean(counts):.1f} of "
                  f"{runs[0]['counts']} counts ({runs[0]['counts'] / np.mean(counts):.1f}x fewer; "
                  f"{min(counts)}-{max(counts)}), settled {sum(r['reached'] for r in runs)}/{len(runs)}; unpicked "
                  f"within 10%: mean {np.mean(within):.1%}, worst {min(within):.1%}; MAPE "
                  f"{np.mean([r['mape'] for r in runs]):.1f}%; decisions "
                  f"{np.mean([r['decision_seconds'] for r in runs]):.1f} s", flush=True)
    if len(results) > 1:
        print(f"all {len(results)} replays: {np.mean([r['counts'] / r['measured'] for r in results]):.1f}x fewer "
              f"counts on average (worst {min(r['counts'] / r['measured'] for r in results):.1f}x); within 10%: "
              f"mean {np.mean([r['within'] for r in results]):.1%}, worst {min(r['within'] for r in results):.1%}")


def replay_repeated(folders: list[str], seeds: int, options: dict) -> None:
    results = []
    for folder in folders:
        sweeps = [read_curves(str(path)).sort_values("channels").reset_index(drop=True)
                  for path in sorted(Path(folder).iterdir()) if path.name.endswith((".db", ".csv", ".csv.gz"))]
        if len(sweeps) < 2:
            raise SystemExit(f"{folder}: needs at least two sweeps of the same series")
        base = sweeps[0]
        latencies = np.stack([sweep.set_index("channels").min_ms.reindex(base.channels).to_numpy() for sweep in sweeps])
        runs = []
        for seed in range(seeds):
            source = np.random.default_rng(seed).integers(0, len(sweeps), len(base))
            picked, reference = base.copy(), base.copy()
            columns = np.arange(len(base))
            picked["min_ms"] = latencies[source, columns]
            reference["min_ms"] = (latencies.sum(axis=0) - picked.min_ms.to_numpy()) / (len(sweeps) - 1)
            runs.append(replay(picked, reference=reference, **options))
        results += runs
        within = [r["within"] for r in runs]
        # later over earlier, as the benchmark compares them
        agreement = np.mean([(np.abs(latencies[j] / latencies[i] - 1) <= 0.10).mean()
                             for i in range(len(sweeps)) for j in range(i + 1, len(sweeps))])
        print(f"{Path(folder).name} ({len(sweeps)} sweeps, which agree within 10% on {agreement:.1%} of counts): "
              f"{np.mean([r['measured'] for r in runs]):.1f} of {len(base)} counts ({min(r['measured'] for r in runs)}-"
              f"{max(r['measured'] for r in runs)}); within 10% of the other sweeps: mean {np.mean(within):.1%}, worst "
              f"{min(within):.1%}; baseline tiles {sorted({r['tile'] for r in runs})}", flush=True)
    print(f"all {len(results)} replays: {np.mean([r['measured'] for r in results]):.1f} counts on average; within 10%: "
          f"mean {np.mean([r['within'] for r in results]):.1%}, worst {min(r['within'] for r in results):.1%}; "
          f"{sum(r['within'] >= 0.95 for r in results)} at 95% or more, "
          f"{sum(r['within'] >= 0.95 and r['measured'] <= 22 for r in results)} of them with 22 counts or fewer")


if __name__ == "__main__":
    main()
