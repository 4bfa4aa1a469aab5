"""`advisor recommend`: channel counts per group that meet a latency budget, pruned and proven."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, INPUT, MODEL, THREADS, TUNING_DIR, app, err, out, progress
from advisor.errors import AdvisorError


@app.command()
def recommend(
    budget_ms: str = typer.Option(..., "--budget-ms", help="Latency budget for the whole network, in ms."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    backend: str = typer.Option("torch", "--backend", "-b",
                                help="torch (eager: oneDNN/cuDNN) or tvm (MetaSchedule-tuned, --trials per kernel)."),
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(8, "--trials", help="MetaSchedule trials per kernel (tvm)."),
    threads: Optional[int] = THREADS,
    importance: str = typer.Option("magnitude", "--importance",
                                   help="Torch-Pruning criterion: magnitude, lamp, fpgm or bn."),
    min_ratio: float = typer.Option(0.25, "--min-ratio", help="Keep at least this share of each group's channels."),
    samples: int = typer.Option(7, "--samples", help="Output widths measured per convolution and input width."),
    repeats: int = typer.Option(9, "--repeats", help="Timing samples per measurement."),
    db: Path = DB,
    tuning_dir: Path = TUNING_DIR,
    output: Path = typer.Option(Path("out/plan.json"), "--output", "-o", help="Plan (JSON)."),
    pruned_model: Path = typer.Option(Path("out/pruned.pt2"), "--pruned-model", help="Pruned network (.pt2)."),
) -> None:
    """Per-group channel counts meeting a latency budget, pruned, measured, against uniform pruning."""
    from advisor.board.timing import TimingPolicy
    from advisor.compile.targets import parse_target
    from advisor.measure.threads import use_threads
    from advisor.model.loading import load_model
    from advisor.prune.recommend import RecommendConfig, parse_budget, recommend as run_recommend, save_outputs
    from advisor.report.recommend import plan_table, recommendation_lines
    from advisor.store.results import ResultStore

    budget = parse_budget(budget_ms)
    if pruned_model.suffix != ".pt2":
        raise AdvisorError(f"--pruned-model must end in .pt2, not {pruned_model.name}")
    thread_count = use_threads(threads)
    spec = parse_target(target, thread_count)
    with ResultStore(db) as store:
        loaded = load_model(model, input)
        config = RecommendConfig(loaded, backend, spec, trials, thread_count, str(tuning_dir),
                                 TimingPolicy(repeats=repeats), samples, min_ratio, importance=importance)
        if not spec.can_run_here():
            raise AdvisorError(f"target {spec.name} has no device on this machine")
        result = run_recommend(config, store, budget, progress())
    save_outputs(result, config, output, pruned_model)
    out.print(plan_table(f"{loaded.label}: plan for {budget:g} ms on {backend}/{spec.name} "
                         f"({thread_count} threads)", result.groups, result.plan.counts))
    plan = result.plan
    if not plan.met:
        err.print(f"wrote {output} (the fastest plan found)")
        raise AdvisorError(f"budget {budget:g} ms cannot be met: the fastest plan found (table above, every group "
                           f"down to --min-ratio {min_ratio:g} at most) is predicted at {plan.predicted_ms:.2f} ms; "
                           f"unpruned measured {result.unpruned_ms:.2f} ms")
    for line in recommendation_lines(result, budget):
        out.print(line)
    err.print(f"wrote {output} and {pruned_model} in {result.seconds:.0f} s "
              f"(cost model from {result.fit_points} measured layer widths)")
    if result.recommended_ms > budget:
        raise AdvisorError(f"budget {budget:g} ms missed when measured: the recommended network read "
                           f"{result.recommended_ms:.2f} ms after {result.attempts} plans (outputs written)")
