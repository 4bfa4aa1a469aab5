"""`advisor recommend`: channel counts per group that meet a latency budget, pruned and proven
against the baselines users have, with accuracy after the same fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, INPUT, MODEL, THREADS, TUNING_DIR, app, err, out, progress
from advisor.errors import AdvisorError


@app.command()
def recommend(
    budget_ms: str = typer.Option(..., "--budget-ms", help="Latency budget of the whole network: ms (20), or a "
                                  "share of the unpruned network's latency measured beside it (50%)."),
    model: str = MODEL,
    input: Optional[str] = INPUT,
    data: Optional[str] = typer.Option(None, "--data", help="digits, a folder of class folders, or a .npz: a "
                                       "built-in network is trained on it (once, cached), every network compared is "
                                       "fine-tuned on it and scored on its held-out images."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs of a built-in network on --data."),
    finetune: int = typer.Option(3, "--finetune", help="Fine-tuning epochs of every network compared (--data)."),
    eval_spec: Optional[str] = typer.Option(None, "--eval", help="path/file.py:function scoring a model (higher "
                                            "is better) instead of held-out accuracy (--data)."),
    backend: str = typer.Option("torch", "--backend", "-b",
                                help="torch (eager: oneDNN/cuDNN) or tvm (MetaSchedule-tuned, --trials per kernel)."),
    target: str = typer.Option("llvm", "--target", "-t", help="llvm, cuda, a TVM tag, or a JSON dict."),
    trials: int = typer.Option(8, "--trials", help="MetaSchedule trials per convolution (tvm)."),
    cost_model: str = typer.Option("xgb", "--cost-model", help="MetaSchedule's cost model: xgb or random (tvm)."),
    threads: Optional[int] = THREADS,
    importance: str = typer.Option("magnitude", "--importance",
                                   help="Torch-Pruning criterion: magnitude, lamp, fpgm, bn or taylor (gradients: --data)."),
    min_ratio: float = typer.Option(0.25, "--min-ratio", help="Keep at least this share of each group's channels."),
    samples: int = typer.Option(7, "--samples", help="Output widths measured per convolution and input width."),
    repeats: int = typer.Option(9, "--repeats", help="Timing samples per measurement."),
    margin: float = typer.Option(0.03, "--margin", help="Aim this share under the budget (timing noise)."),
    plans: int = typer.Option(3, "--plans", help="Plans measured at most (one over budget recalibrates the next)."),
    db: Path = DB,
    tuning_dir: Path = TUNING_DIR,
    output: Path = typer.Option(Path("out/plan.json"), "--output", "-o", help="Plan (JSON); its network timings "
                                "are kept beside it (.journal.json) so that a rerun resumes."),
    pruned_model: Path = typer.Option(Path("out/pruned.pt2"), "--pruned-model",
                                      help="The recommended network, fine-tuned (.pt2)."),
    artifact: Path = typer.Option(Path("out/pruned-tvm"), "--artifact",
                                  help="Folder for the compiled networks (tvm), for `advisor measure`."),
    page: Path = typer.Option(Path("out/recommend.html"), "--page", help="HTML page of the comparison."),
) -> None:
    """Per-group channel counts meeting a latency budget, pruned, fine-tuned and measured against
    Torch-Pruning at one ratio (plain and round_to=8) at the same budget."""
    from advisor.board.timing import TimingPolicy
    from advisor.compile.targets import parse_target
    from advisor.measure.checks import check_measuring
    from advisor.measure.threads import use_threads
    from advisor.model.loading import load_model
    from advisor.model.training import load_evaluate
    from advisor.prune.journal import Journal
    from advisor.prune.recommend import (Recommender, RecommendConfig, Scoring, journal_path, parse_budget,
                                         save_outputs, with_data)
    from advisor.report.recommend import networks_table, plan_table, recommendation_lines
    from advisor.report.recommend_page import write_recommend_page
    from advisor.store.results import ResultStore

    budget = parse_budget(budget_ms)
    check_measuring(backend=backend, repeats=repeats, cost_model=cost_model)  # before loading (trials: the config)
    if pruned_model.suffix != ".pt2":
        raise AdvisorError(f"--pruned-model must end in .pt2, not {pruned_model.name}")
    if finetune < 0 or epochs < 1:
        raise AdvisorError("--finetune must be 0 or more, --epochs at least 1")
    if eval_spec and not data:
        raise AdvisorError("--eval needs --data: the networks are fine-tuned on its training images")
    evaluate = load_evaluate(eval_spec) if eval_spec else None
    thread_count = use_threads(threads)
    spec = parse_target(target, thread_count)
    with ResultStore(db) as store:
        loaded = load_model(model, input)
        config = RecommendConfig(loaded, backend, spec, trials, thread_count, str(tuning_dir),
                                 TimingPolicy(repeats=repeats), samples, min_ratio, importance=importance,
                                 margin=margin, plans=plans, cost_model=cost_model)
        if not spec.can_run_here():
            raise AdvisorError(f"target {spec.name} has no device on this machine")
        scoring = None
        if data:
            config.loaded, dataset = with_data(loaded, data, epochs, announce=lambda m: err.print(m))
            scoring = Scoring(dataset, finetune, evaluate, f"eval:{eval_spec}" if eval_spec else "accuracy")
        else:
            err.print("no --data: the weights are the network's own and no accuracy is measured")
        recommender = Recommender(config, store, budget, progress(), scoring, Journal(journal_path(output)))
        result = recommender.run()
        result.artifact = recommender.export(result, artifact)
    save_outputs(result, config, output, pruned_model)
    summary = result.to_dict(config)
    label = config.loaded.label
    out.print(plan_table(f"{label}: plan for {budget.text} on {backend}/{spec.name} ({thread_count} threads)",
                         result.groups, result.plan.counts))
    if not result.reachable:
        err.print(f"wrote {output} (the fastest plan)")
        raise AdvisorError(f"budget {budget.text} ({result.budget_ms:.3f} ms) cannot be met: the fastest plan (table "
                           f"above, every group at --min-ratio {min_ratio:g}) measured {result.fastest_ms:.3f} ms "
                           f"beside the unpruned network's {result.unpruned_ms:.3f} ms (predicted "
                           f"{result.plan.predicted_ms:.3f} ms)")
    write_recommend_page(summary, page)
    out.print(networks_table(summary))
    for line in recommendation_lines(summary):
        out.print(line, highlight=False)
    written = [str(output), str(pruned_model), str(page)] + ([str(result.artifact.parent)] if result.artifact else [])
    err.print(f"wrote {', '.join(written)} in {result.seconds:.0f} s (cost model from {result.fit_points} measured "
              f"layer widths)" + (f"; on a board: advisor measure {result.artifact.parent}" if result.artifact else ""))
    if not result.met:
        raise AdvisorError(f"budget {budget.text} ({result.budget_ms:.3f} ms) missed when measured: the recommended "
                           f"network read {result.recommended_ms:.3f} ms after {result.attempts} plan(s) (outputs "
                           "written)")
