"""Replay the active sweep's decisions against recorded exhaustive sweeps.

For each curve (one series of a results database with every count of a range measured), the
active search picks counts as it would live, but reads their latency from the recording; at the
stop it prints how many counts it used and how well its model predicts the counts it never
picked. No measuring, so strategies can be compared on many curves in seconds; the live figures
come from benchmarks/cost_model_bench.py.

    .venv/bin/python benchmarks/active_replay.py DB [DB ...] [--initial 12] [--batch 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from advisor.active import ActiveSearch
from advisor.cost_model import SERIES, WITHIN, usable
from advisor.store import ResultStore


def replay(curve, *, accuracy: float, initial: int, batch: int, min_points: int | None = None) -> dict:
    curve = curve.sort_values("channels").reset_index(drop=True)
    counts = curve.channels.astype(int).tolist()
    search = ActiveSearch(counts, curve, accuracy=accuracy, initial=initial, batch=batch, min_points=min_points)
    measured = set(search.first(set()))
    started = time.perf_counter()
    while True:
        decision = search.decide(curve[curve.channels.isin(measured)])
        if not decision.picks:
            break
        measured |= set(decision.picks)
    unseen = curve[~curve.channels.isin(measured)]
    errors = np.abs(decision.model.predict(unseen) / unseen[decision.model.column].to_numpy() - 1)
    return {"counts": len(counts), "measured": len(measured), "within": float((errors <= WITHIN).mean()),
            "mape": float(errors.mean() * 100), "worst": float(errors.max() * 100), "reached": decision.reached,
            "fit_seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("databases", nargs="+")
    parser.add_argument("--accuracy", type=float, default=0.95)
    parser.add_argument("--initial", type=int, default=12)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--min-points", type=int, default=None, help="default: a tenth of the range")
    args = parser.parse_args()
    results = []
    for path in args.databases:
        with ResultStore(path) as store:
            frame = usable(store.frame())
        for values, curve in frame.groupby(SERIES, sort=True):
            result = replay(curve, accuracy=args.accuracy, initial=args.initial, batch=args.batch,
                            min_points=args.min_points)
            results.append(result)
            label = " ".join(str(v) for v in values[:5])
            print(f"{label}: {result['measured']}/{result['counts']} counts "
                  f"({result['counts'] / result['measured']:.1f}x fewer), settled {result['reached']}; unpicked "
                  f"within 10%: {result['within']:.1%}, MAPE {result['mape']:.1f}%, worst {result['worst']:.0f}%; "
                  f"decisions {result['fit_seconds']:.1f} s", flush=True)
    if len(results) > 1:
        print(f"mean: {np.mean([r['counts'] / r['measured'] for r in results]):.1f}x fewer counts, "
              f"{np.mean([r['within'] for r in results]):.1%} within 10%, worst curve "
              f"{min(r['within'] for r in results):.1%}")


if __name__ == "__main__":
    main()
