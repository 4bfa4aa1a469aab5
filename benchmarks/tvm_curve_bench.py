"""Tuned-TVM latency curves: reproducible, affordable, and against the vendor library.

From one run (resumable: every database and tuning directory lives under --work and is reused),
for one layer on tuned TVM, printing each figure as it lands:

  A, B   two runs of the design-card command (`advisor sweep --layer conv3 --channels 32..256`,
         its defaults: the active strategy over every count, tuning stopped by its rule, traps
         given a second look), each from an empty database and tuning directory, each timed
         as a user waits for it (a fresh process);
  ref    an exhaustive tuned sweep of the grid (every --grid-step-th count of the range), from an
         empty tuning directory: the reference;
  vendor at the reference's hardware-friendly counts (--friendly of them, spread), TVM tuned with
         each trial cap (--caps, one tuning directory the caps resume in turn) against PyTorch
         (oneDNN on the CPU, cuDNN on CUDA), measured one right after the other.

Figures:
  reproducibility: the share of the grid (and of every trap either sweep reports) at which A and
         B agree within 10% (a count's value: measured median, else the model's prediction), and
         what each trap reported by one is in the other (confirmed, luck, or not a trap there);
  cost:  A's time (target: at most 15 minutes on 2 cores), the share of grid counts A did not
         measure that its model predicts within 10% and 5% of the reference, and A's time against
         the reference's time per count times the range's counts (an exhaustive tuned sweep of
         every count, at the reference's own accuracy);
  vendor: TVM / vendor latency per friendly count and cap, and their geometric mean.

    .venv/bin/python benchmarks/tvm_curve_bench.py --work out/tvm-curve-bench [--lock /tmp/advisor-cpu.lock]
    # smaller: --stages A,ref --grid-step 32 --caps 32
    # on a GPU (scripts/gpu_tvm_curves.sh): --model resnet18 --target cuda --dtype float16 --cost-model random
    #   --strategy exhaustive --grid 64,96,127,128 --stages A,B,vendor --caps 32
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WITHIN, CLOSE = 0.10, 0.05


def say(text: str = "") -> None:
    print(text, flush=True)


@contextmanager
def held(lock: str | None, what: str):
    """The shared CPU lock around one stage (others' heavy jobs wait, and wait for it)."""
    if not lock:
        yield
        return
    with open(lock, "a") as handle:
        waited = time.perf_counter()
        fcntl.flock(handle, fcntl.LOCK_EX)
        if time.perf_counter() - waited > 1:
            say(f"# {what}: waited {time.perf_counter() - waited:.0f} s for {lock}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Work:
    """The work folder: one subfolder per sweep, and the seconds each stage's runs took."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state_path = root / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return path

    def record(self, stage: str, seconds: float, done: bool) -> None:
        entry = self.state.setdefault(stage, {"seconds": 0.0, "runs": 0, "done": False})
        entry["seconds"] += seconds
        entry["runs"] += 1
        entry["done"] = done
        self.state_path.write_text(json.dumps(self.state, indent=1))

    def done(self, stage: str) -> bool:
        return self.state.get(stage, {}).get("done", False)

    def seconds(self, stage: str) -> float:
        return self.state.get(stage, {}).get("seconds", float("nan"))


def advisor(*args: str, log: Path) -> tuple[int, float]:
    """Run the CLI in a fresh process (as a user does); its output goes to `log`. (exit status, s)"""
    path = os.environ.get("PYTHONPATH")  # kept: a TVM unpacked beside (the GPU machine's /tmp/tvm-site)
    env = {**os.environ, "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""), "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ advisor {' '.join(args)}  # {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
        out.flush()
        done = subprocess.run([sys.executable, "-m", "advisor", *args], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    return done.returncode, time.perf_counter() - started


def sweep_stage(work: Work, stage: str, args, extra: list[str]) -> None:
    """One sweep in its own database and tuning directory, run (or resumed) until it exits 0."""
    if work.done(stage):
        say(f"# {stage}: done before ({work.seconds(stage):.0f} s), reused")
        return
    folder = work.folder(stage)
    command = ["sweep", "--model", args.model, "--layer", args.layer, "--target", args.target, "--dtype", args.dtype,
               "--cost-model", args.cost_model, "--db", str(folder / "advisor.db"),
               "--tuning-dir", str(folder / "tuning_logs"), *extra]
    if args.trials is not None:
        command += ["--trials", str(args.trials)]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    with held(args.lock, stage):
        code, seconds = advisor(*command, log=folder / "sweep.log")
    work.record(stage, seconds, done=code == 0)
    tail = (folder / "sweep.log").read_text().strip().splitlines()[-3:]
    say(f"# {stage}: exit {code} after {seconds:.0f} s ({work.state[stage]['runs']} run(s), "
        f"{work.seconds(stage):.0f} s in all): " + " | ".join(line.strip() for line in tail))


def series(folder: Path, backend: str = "tvm", trials: int | None = None):
    """The stored rows of one backend's series in a sweep's database (ok and predicted)."""
    from advisor.store.results import ResultStore

    path = folder / "advisor.db"
    if not path.is_file():
        return None
    with ResultStore(path) as store:
        rows = store.frame(backend=backend, trials=trials)
    rows = rows[rows.status.isin(["ok", "predicted"])]
    return rows.sort_values("channels").reset_index(drop=True) if len(rows) else None


def values(rows) -> dict[int, float]:
    """A count's value: its measured median, else the model's predicted median."""
    return {int(r.channels): float(r.median_ms if r.status == "ok" else r.predicted_ms) for r in rows.itertuples()}


def reported_traps(rows) -> tuple[dict[int, dict], dict]:
    """The traps a tuned sweep reports (confirmed by a second look), and its whole step report."""
    from advisor.learn.curves import curve, step_report

    checks = {int(r.channels): r.trap_check for r in rows.itertuples() if isinstance(r.trap_check, str)}
    report = step_report(curve(rows), checks=checks)
    return {t["channels"]: t for t in report["traps"] if t["check"] == "confirmed"}, report


def agree(a: float, b: float) -> float:
    return max(a, b) / min(a, b) - 1


def describe_sweep(name: str, rows, seconds: float) -> None:
    measured = rows[rows.status == "ok"]
    traps, report = reported_traps(rows)
    spent = measured.trials_spent.dropna()
    stops = measured.tuning_stop.value_counts().to_dict() if "tuning_stop" in measured else {}
    say(f"{name}: {seconds / 60:.1f} min; {len(measured)} counts measured, {int((rows.status == 'predicted').sum())} "
        f"predicted; trials spent per measured count: median {spent.median():.0f}, {spent.min():.0f}-{spent.max():.0f}"
        f" ({', '.join(f'{k}: {v}' for k, v in stops.items())})")
    unchecked = [t["channels"] for t in report["traps"] if t["check"] != "confirmed"]
    say("  traps reported (confirmed by a second look): "
        + (", ".join(f"{c} (use {t['use_instead']}, {t['slowdown']:.2f}x)" for c, t in traps.items()) or "none")
        + "; tuning luck: " + (", ".join(f"{x['channels']} ({x['removed_by']})" for x in report["tuning_luck"])
                               or "none") + (f"; traps not looked at again: {unchecked}" if unchecked else ""))


def reproducibility(a_rows, b_rows, grid: list[int]) -> dict:
    a_values, b_values = values(a_rows), values(b_rows)
    a_traps, a_report = reported_traps(a_rows)
    b_traps, b_report = reported_traps(b_rows)
    counts = sorted(set(grid) | set(a_traps) | set(b_traps))
    counts = [c for c in counts if c in a_values and c in b_values]
    gaps = {c: agree(a_values[c], b_values[c]) for c in counts}
    share = float(np.mean([g <= WITHIN for g in gaps.values()]))
    say(f"reproducibility: A and B agree within 10% at {share:.1%} of {len(counts)} counts (grid and traps; target "
        f"at least 90%); median gap {np.median(list(gaps.values())):.1%}, worst {max(gaps.values()):.1%} at "
        f"{max(gaps, key=gaps.get)}")
    say("  off by more than 10%: " + (", ".join(f"{c}: {a_values[c]:.4f} vs {b_values[c]:.4f} ms" for c, g in
                                                gaps.items() if g > WITHIN) or "none"))
    verdicts = {}
    for name, mine, other, other_report in (("A", a_traps, b_traps, b_report), ("B", b_traps, a_traps, a_report)):
        luck = {x["channels"] for x in other_report["tuning_luck"]}
        for count in mine:
            verdicts[f"{name}:{count}"] = ("confirmed" if count in other else "luck" if count in luck
                                           else "not a trap there")
    passed = all(v in ("confirmed", "luck") for v in verdicts.values())
    say("  traps of one in the other: " + (", ".join(f"{k} {v}" for k, v in verdicts.items()) or "no traps")
        + f" -> {'every one confirmed or absent-as-luck' if passed else 'NOT all confirmed or luck'}")
    return {"share": share, "counts": len(counts), "traps": verdicts}


def accuracy(a_rows, ref_rows, a_seconds: float, ref_seconds: float, range_counts: int) -> dict:
    a_values = values(a_rows)
    measured = set(a_rows.channels[a_rows.status == "ok"].astype(int))
    ref = {int(r.channels): float(r.median_ms) for r in ref_rows.itertuples() if r.status == "ok"}
    unseen = [c for c in ref if c not in measured and c in a_values]
    errors = np.array([abs(a_values[c] / ref[c] - 1) for c in unseen])
    within = float((errors <= WITHIN).mean()) if len(errors) else float("nan")
    close = float((errors <= CLOSE).mean()) if len(errors) else float("nan")
    if len(errors):
        say(f"cost: A's predictions at the {len(unseen)} grid counts it did not measure: {within:.1%} within 10% of "
            f"the reference (target at least 95%), {close:.1%} within 5% (goal 90%); median error "
            f"{np.median(errors):.1%}, worst {errors.max():.1%} at {unseen[int(errors.argmax())]}")
    else:
        say("cost: A measured every grid count: no prediction to score")
    per_count = ref_seconds / len(ref)
    ratio = per_count * range_counts / a_seconds
    say(f"  A took {a_seconds / 60:.1f} min for {range_counts} counts (target at most 15); the reference took "
        f"{ref_seconds / 60:.1f} min for {len(ref)} grid counts, {per_count:.0f} s a count: every count of the range "
        f"that way would take {per_count * range_counts / 60:.0f} min, {ratio:.1f}x A's time (target at least 10x)")
    measured_both = [c for c in measured if c in ref]
    if measured_both:
        gaps = np.array([agree(a_values[c], ref[c]) for c in measured_both])
        say(f"  at the {len(measured_both)} grid counts A measured, A and the reference agree within 10% at "
            f"{(gaps <= WITHIN).mean():.1%} (the accuracy of measuring: two tunings of the same count)")
    return {"within": within, "close": close, "unseen": len(unseen), "ratio": ratio}


def spread_pick(counts: list[int], n: int) -> list[int]:
    if len(counts) <= n:
        return counts
    return sorted({counts[int(round(i))] for i in np.linspace(0, len(counts) - 1, n)})


def vendor_library(target: str) -> str:
    """The library PyTorch's convolutions run on for `target`."""
    from advisor.compile.targets import parse_target

    return "cuDNN" if parse_target(target).kind == "cuda" else "oneDNN"


def vendor_stage(work: Work, args, friendly: list[int]) -> None:
    """TVM with each cap, then the vendor library, at the friendly counts: one tuning directory that
    the caps resume in turn; each sweep in its own process (TVM's thread pool, still spinning after
    its last call, slows PyTorch's threads in the same process)."""
    vendor_name = vendor_library(args.target)
    counts = ",".join(map(str, friendly))
    say(f"vendor: tuned TVM against PyTorch ({vendor_name}) at friendly counts {friendly}, caps {args.caps}")
    folder = work.folder("vendor")
    for cap in args.caps:
        common = ["--strategy", "exhaustive", "--channels", counts, "--no-second-opinion", "--db",
                  str(folder / f"cap-{cap}.db"), "--model", args.model, "--layer", args.layer, "--target", args.target,
                  "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
        stage = f"vendor-{cap}"
        if not work.done(stage):
            with held(args.lock, stage):
                code, tvm_seconds = advisor("sweep", *common, "--trials", str(cap), "--cost-model", args.cost_model,
                                            "--tuning-dir", str(folder / "tuning_logs"), log=folder / "sweep.log")
                code2, torch_seconds = advisor("sweep", *common, "--backend", "torch", log=folder / "sweep.log")
            work.record(stage, tvm_seconds + torch_seconds, done=code == code2 == 0)
        from advisor.store.results import ResultStore

        with ResultStore(folder / f"cap-{cap}.db") as store:
            tvm_rows = store.frame(backend="tvm", trials=cap).set_index("channels")
            torch_rows = store.frame(backend="torch").set_index("channels")
        ratios = []
        for count in friendly:
            if count in tvm_rows.index and count in torch_rows.index and tvm_rows.status[count] == "ok":
                ratio = tvm_rows.median_ms[count] / torch_rows.median_ms[count]
                ratios.append(ratio)
                say(f"  cap {cap:4d}, c={count:4d}: TVM {tvm_rows.median_ms[count]:.4f} ms "
                    f"({int(tvm_rows.trials_spent[count])} trials, {tvm_rows.tuning_stop[count]}), {vendor_name} "
                    f"{torch_rows.median_ms[count]:.4f} ms: TVM/{vendor_name} {ratio:.2f}x")
        if ratios:
            say(f"  cap {cap}: TVM over {vendor_name}, geometric mean {math.exp(np.mean(np.log(ratios))):.2f}x "
                f"(goal at most 1.0x), range {min(ratios):.2f}-{max(ratios):.2f}x")


def vendor_grid(work: Work, args, grid: list[int], sweeps: dict) -> None:
    """PyTorch (the vendor library) at the grid counts, against each tuned sweep's measured points."""
    stage = "vendor-grid"
    sweep_stage(work, stage, argparse.Namespace(**{**vars(args), "trials": None, "cost_model": "xgb"}),
                ["--backend", "torch", "--strategy", "exhaustive", "--channels", ",".join(map(str, grid))])
    vendor = series(work.folder(stage), backend="torch")
    if vendor is None:
        return
    name = vendor_library(args.target)
    reference = vendor.set_index("channels").median_ms
    for sweep, rows in sweeps.items():
        tvm = rows[rows.status == "ok"].set_index("channels").median_ms
        ratios = {c: tvm[c] / reference[c] for c in grid if c in tvm.index and c in reference.index}
        if ratios:
            say(f"vendor: sweep {sweep}, TVM over {name}: " + ", ".join(f"{c}: {r:.2f}x" for c, r in ratios.items())
                + f"; geometric mean {math.exp(np.mean(np.log(list(ratios.values())))):.2f}x (goal at most 1.0x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "out" / "tvm-curve-bench")
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--layer", default="conv3")
    parser.add_argument("--channels", default="32..256")
    parser.add_argument("--grid-step", type=int, default=8)
    parser.add_argument("--grid", help="the grid's counts instead (e.g. 64,96,127,128)")
    parser.add_argument("--target", default="llvm")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--cost-model", default="xgb")
    parser.add_argument("--trials", type=int, help="trial cap of the sweeps (default: the CLI's)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--strategy", default="active", help="of sweeps A and B: active (the default command) or "
                                                              "exhaustive (of the grid)")
    parser.add_argument("--caps", default="32,128,512", type=lambda text: [int(c) for c in text.split(",")])
    parser.add_argument("--friendly", type=int, default=3, help="friendly counts compared with the vendor")
    parser.add_argument("--stages", default="A,ref,B,vendor",
                        help="A, ref, B, vendor (caps at friendly counts), vendor-grid (PyTorch at the grid)")
    parser.add_argument("--lock", help="a lock file taken around each stage (flock), e.g. /tmp/advisor-cpu.lock")
    args = parser.parse_args()

    from advisor.cli.options import parse_channels

    stages = set(args.stages.split(","))
    counts = parse_channels(args.channels, default_step=1)
    grid = ([int(c) for c in args.grid.split(",")] if args.grid
            else sorted(set(counts[::args.grid_step]) | {counts[-1]}))
    work = Work(args.work)
    say(f"# tvm_curve_bench {' '.join(sys.argv[1:])}")
    say(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {args.model} {args.layer} on {args.target} "
        f"({args.dtype}), counts {args.channels}, grid {grid[0]}..{grid[-1]} ({len(grid)} counts); work {args.work}")
    from advisor.compile.targets import parse_target
    from advisor.measure.environment import environment

    env = environment(parse_target(args.target).kind, args.threads or 0)
    say(f"# {env.get('cpu_model')}, {os.cpu_count()} cores, {env.get('device')}, TVM {env.get('tvm_version')}, "
        f"torch {env.get('torch_version')}")

    sweep_args = (["--channels", args.channels] if args.strategy == "active"
                  else ["--strategy", "exhaustive", "--channels", ",".join(map(str, grid))])
    found = {}
    for stage in ("A", "ref", "B"):
        if stage not in stages:
            continue
        extra = ["--strategy", "exhaustive", "--channels", ",".join(map(str, grid))] if stage == "ref" else sweep_args
        sweep_stage(work, stage, args, extra)
        rows = series(work.folder(stage))
        if rows is None:
            continue
        found[stage] = rows
        describe_sweep(stage, rows, work.seconds(stage))
        if stage in ("ref", "B") and "A" in found and "ref" in found and args.strategy == "active":
            if stage == "ref" or "ref_done" not in found:
                accuracy(found["A"], found["ref"], work.seconds("A"), work.seconds("ref"), len(counts))
                found["ref_done"] = True
        if stage == "B" and "A" in found:
            reproducibility(found["A"], found["B"], grid)
    if "vendor-grid" in stages:
        vendor_grid(work, args, grid, {name: found[name] for name in ("A", "B") if name in found})
    if "ref" not in found and work.done("ref"):
        found["ref"] = series(work.folder("ref"))
    if "vendor" in stages:
        from advisor.learn.curves import curve, friendly_counts

        source = found.get("ref") if found.get("ref") is not None else found.get("A")
        if source is None:
            say("vendor: needs the reference sweep (or A) for its friendly counts")
            return
        measured = source[source.status == "ok"]
        friendly = spread_pick(friendly_counts(curve(measured)), args.friendly)
        vendor_stage(work, args, friendly)


if __name__ == "__main__":
    main()
