"""`advisor pareto`: accuracy against latency and memory for weight pruning, channel pruning and quantisation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from advisor.cli.app import DB, TUNING_DIR, app, err, out, progress
from advisor.errors import AdvisorError


@app.command()
def pareto(
    model: str = typer.Option("tinynet", "--model", "-m", help="Network of the built-in family: tinynet or "
                              "resnet18-w16 (ResNet-18, width 16), trained on --data with a fixed seed."),
    techniques: str = typer.Option("weight,channel,quant", "--techniques", help="weight, channel, quant."),
    data: str = typer.Option("digits", "--data", help="digits (scikit-learn, no download), a folder of class "
                             "folders, or a .npz with x and y."),
    eval_spec: Optional[str] = typer.Option(None, "--eval", help="path/file.py:function scoring a model "
                                            "(higher is better) instead of held-out accuracy."),
    sparsities: str = typer.Option("0.5,0.7,0.9", "--sparsities", help="Weight-pruning sparsities."),
    ratios: str = typer.Option("0.25,0.5,0.75", "--ratios", help="Channel-pruning ratios (uniform)."),
    plan: Optional[list[Path]] = typer.Option(None, "--plan", help="Channel plan JSON {\"layers\": {path: "
                                              "channels}} (repeatable), e.g. from `advisor recommend`."),
    finetune: int = typer.Option(0, "--finetune", help="Epochs of fine-tuning after pruning (0: none)."),
    epochs: int = typer.Option(15, "--epochs", help="Training epochs of the unpruned network."),
    backends: str = typer.Option("tvm,torch", "--backends", help="tvm (MetaSchedule-tuned), torch (eager)."),
    threads: str = typer.Option("1,all", "--threads", help="Thread counts to time, e.g. 1,all."),
    target: str = typer.Option("llvm", "--target", "-t", help="TVM target (CPU targets only here)."),
    trials: int = typer.Option(8, "--trials", help="MetaSchedule trials per kernel (0: default schedules)."),
    tuning_dir: Path = TUNING_DIR,
    repeats: int = typer.Option(10, "--repeats", help="Timing samples per point."),
    image_size: int = typer.Option(32, "--image-size", help="Side images of a folder are resized to."),
    db: Path = DB,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML page (default "
                                          "out/pareto-<model>-<data>.html; the CSV lies beside it)."),
) -> None:
    """Accuracy against latency and memory for compressed variants; resumes from the database."""
    from advisor.board.timing import TimingPolicy
    from advisor.cli.options import parse_floats, parse_thread_counts
    from advisor.compile.targets import parse_target
    from advisor.measure.threads import use_threads
    from advisor.model.datasets import load_dataset
    from advisor.model.training import NETWORKS, load_evaluate, trained_network
    from advisor.pareto.study import ParetoSpec, results_frame, run_pareto
    from advisor.prune.compression import variant_specs
    from advisor.report.pareto_page import write_pareto_outputs
    from advisor.store.results import ResultStore

    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    if model not in NETWORKS:
        raise AdvisorError(f"--model {model!r}: pareto trains networks of the built-in family: "
                           f"{', '.join(NETWORKS)}")
    if finetune < 0 or epochs < 1:
        raise AdvisorError("--finetune must be 0 or more, --epochs at least 1")
    thread_counts = parse_thread_counts(threads)
    words = [t.strip() for t in techniques.split(",") if t.strip()]
    specs = variant_specs(words, parse_floats(sparsities, "--sparsities"), parse_floats(ratios, "--ratios"),
                          [str(p) for p in plan or []], finetune)
    if "channel" in words and not plan:
        specs = [s for s in specs if s.technique != "channel-plan"]
    target_spec = parse_target(target, max(thread_counts))
    evaluate = load_evaluate(eval_spec) if eval_spec else None
    metric = f"eval:{eval_spec}" if eval_spec else "accuracy"
    use_threads(max(thread_counts))  # TVM's pool starts at the largest count and shrinks per measurement
    with ResultStore(db) as store:  # a bad database fails before any training
        dataset = load_dataset(data, image_size=image_size)
        label = f"{model}-e{epochs}"
        study = ParetoSpec(label, dataset, specs, chosen, thread_counts, target_spec, trials, str(tuning_dir),
                           TimingPolicy(repeats=repeats), metric, evaluate)
        trained = trained_network(model, dataset, epochs, announce=lambda m: err.print(m))
        summary = run_pareto(study, trained, store, progress())
        frame = results_frame(store, label, dataset.name, metric, study)
    stem = f"pareto-{model}-{dataset.name.replace(':', '_').replace('/', '_')}"
    html_path = output or Path("out") / f"{stem}.html"
    csv_path = html_path.with_suffix(".csv")
    write_pareto_outputs(frame, f"{label} on {dataset.name}: {len(specs)} variants", html_path, csv_path, metric)
    baseline = frame[frame.technique == "baseline"].accuracy
    out.print(f"{metric} of the unpruned network on {len(dataset.y_test)} held-out images: "
              f"{baseline.iloc[0]:.4f}" if len(baseline) else "no baseline measured")
    err.print(f"{summary.measured} variants measured, {summary.reused} reused from {db}, "
              f"{len(summary.failed)} failures; wrote {html_path} and {csv_path}")
    for failure in summary.failed:
        err.print(f"[red]failed:[/red] {failure}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)
