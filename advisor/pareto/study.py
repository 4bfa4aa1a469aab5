"""`advisor pareto`: accuracy against latency and memory for compressed variants of one trained network.

Two tables in the results database (beside the sweep's `points`; advisor.store.schema):
`pareto_variants` (one row per variant: accuracy on held-out images, stored bytes) and
`pareto_latency` (one row per variant, backend and thread count: latency and peak memory while
running). A run skips every row already stored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import torch

from advisor.board.timing import TimingPolicy
from advisor.compile.targets import TargetSpec
from advisor.errors import AdvisorError, one_line
from advisor.measure.backends import BACKENDS, TOLERANCES, Unavailable, WrongOutput, get_backend
from advisor.measure.checks import check_measuring
from advisor.measure.environment import environment
from advisor.measure.memory import stored_size
from advisor.measure.threads import torch_threads
from advisor.model.datasets import Dataset
from advisor.model.training import accuracy
from advisor.progress import SILENT, Progress
from advisor.prune.compression import Compressed, VariantSpec, compress
from advisor.store.results import ResultStore
from advisor.store.schema import PARETO_LATENCY

log = logging.getLogger(__name__)


@dataclass
class ParetoSpec:
    """What a study measures: variants of one trained network, on backends and thread counts."""

    model_label: str  # network and training recipe, e.g. tinynet-digits-e15
    dataset: Dataset
    specs: list[VariantSpec]
    backends: list[str]
    threads: list[int]
    target: TargetSpec
    trials: int
    tuning_root: str = "tuning_logs"
    policy: TimingPolicy = field(default_factory=TimingPolicy)
    metric: str = "accuracy"  # or eval:path/file.py:function
    evaluate: Callable[[torch.nn.Module], float] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.backends or any(name not in BACKENDS for name in self.backends):
            raise AdvisorError(f"--backends {','.join(self.backends)!r}: use tvm, torch or both")
        if any(threads < 1 for threads in self.threads):
            raise AdvisorError("--threads counts must be at least 1")
        check_measuring(trials=self.trials, repeats=self.policy.repeats)
        if self.target.kind != "llvm" and any(get_backend(b).tuned for b in self.backends):
            raise AdvisorError("advisor pareto measures on this machine's CPU: use --target llvm")

    def latency_keys(self, spec: VariantSpec) -> list[tuple]:
        keys = []
        for name in self.backends:
            backend = get_backend(name)
            target = self.target.name if backend.tuned else "cpu"
            keys += [(self.model_label, self.dataset.name, spec.key, name, target, threads,
                      backend.trials_key(self.trials), 1) for threads in self.threads]
        return keys


@dataclass
class ParetoSummary:
    measured: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)


def _done(store: ResultStore, study: ParetoSpec) -> tuple[set, set]:
    variants = {row[0] for row in store.keys("pareto_variants", ("variant",), statuses=("ok",),
                                              model=study.model_label, dataset=study.dataset.name,
                                              metric=study.metric)}
    latency = store.keys("pareto_latency", PARETO_LATENCY.key, statuses=("ok", "unavailable"),
                         model=study.model_label, dataset=study.dataset.name)
    return variants, latency


def run_pareto(study: ParetoSpec, trained: torch.nn.Module, store: ResultStore,
               progress: Progress = SILENT) -> ParetoSummary:
    summary = ParetoSummary()
    done_variants, done_latency = _done(store, study)
    env = {k: v for k, v in environment("llvm", max(study.threads)).items() if k != "threads"}
    with progress.task("variants", len(study.specs)) as task:
        for spec in study.specs:
            task.describe(spec.label)
            missing = [key for key in study.latency_keys(spec) if key not in done_latency]
            if spec.key in done_variants and not missing:
                summary.reused += 1
                task.advance(f"{spec.label}: reused")
                continue
            try:
                compressed = compress(spec, trained, study.dataset, study.seed)
            except AdvisorError:
                raise  # bad input (a plan that does not fit): stop with the message
            except Exception as error:
                store.save(_variant_row(study, spec) | _failure(error), "pareto_variants")
                summary.failed.append(f"{spec.label}: {one_line(error)}")
                task.advance(f"{spec.label}: failed")
                continue
            if spec.key not in done_variants:
                store.save(_measure_variant(study, spec, compressed), "pareto_variants")
            measured = []
            for key in missing:
                row = dict(zip(PARETO_LATENCY.key, key)) | env
                row |= _measure_latency(study, compressed, key[3], key[5])
                if row["status"] == "failed":
                    summary.failed.append(f"{spec.label} {key[3]} {key[5]} thread(s): {row['error']}")
                store.save(row, "pareto_latency")
                shown = f"{row['median_ms']:.3f} ms" if row["status"] == "ok" else row["status"]
                measured.append(f"{key[3]} {key[5]}t {shown}")
            summary.measured += 1
            task.advance(f"{spec.label}: {', '.join(measured) or 'scored'}")
    return summary


def _variant_row(study: ParetoSpec, spec: VariantSpec) -> dict:
    return {"model": study.model_label, "dataset": study.dataset.name, "metric": study.metric, "variant": spec.key,
            "label": spec.label, "technique": spec.technique, "strength": spec.strength, "plan": spec.plan,
            "finetune": spec.finetune}


def _measure_variant(study: ParetoSpec, spec: VariantSpec, compressed: Compressed) -> dict:
    """Accuracy on the held-out images (or the user's score) and the stored size."""
    if study.evaluate is not None:
        score = study.evaluate(compressed.module)
    else:
        score = accuracy(compressed.module, study.dataset.x_test, study.dataset.y_test, compressed.input_dtype)
    size = stored_size(compressed.module)
    return _variant_row(study, spec) | {
        "accuracy": score, "test_images": len(study.dataset.y_test), "stored_bytes": size.stored_bytes,
        "dense_bytes": size.dense_bytes, "parameters": size.parameters,
        "nonzero_parameters": size.nonzero_parameters, "notes": json.dumps(compressed.notes), "status": "ok"}


_networks: dict[tuple, tuple] = {}  # (id(compressed), backend): (compressed, prepared network), one variant at a time


def _network(study: ParetoSpec, compressed: Compressed, backend: str):
    key = (id(compressed), backend)
    if key not in _networks or _networks[key][0] is not compressed:
        if all(held is not compressed for held, _ in _networks.values()):
            _networks.clear()  # a new variant: free the previous one's modules
        # a held-out image, not zeros: the output checked against PyTorch's must depend on every weight
        example = study.dataset.x_test[:1].to(compressed.input_dtype)
        network = get_backend(backend).network(compressed.module, example, study.target,
                                               tuning_root=study.tuning_root, trials=study.trials)
        _networks[key] = (compressed, network)
    return _networks[key][1]


def _measure_latency(study: ParetoSpec, compressed: Compressed, backend: str, threads: int) -> dict:
    try:
        network = _network(study, compressed, backend)
        _check_output(network, compressed, backend)
        timing = network.time(study.policy, threads)
        with torch_threads(threads):
            peak, method = network.peak()
    except KeyboardInterrupt:
        raise
    except Unavailable as reason:
        return {"status": "unavailable", "error": one_line(reason)}
    except Exception as error:  # a failed measurement is recorded; the run goes on
        log.debug("latency of a variant failed", exc_info=True)
        return _failure(error)
    return {"status": "ok", **timing.to_dict(), "peak_bytes": peak, "peak_method": method,
            "max_abs_err": network.max_abs_err, "tuning_seconds": network.tuning_seconds}


def _check_output(network, compressed: Compressed, backend: str) -> None:
    """The correctness gate: a compiled network whose output is not PyTorch's is recorded as failed,
    not timed (the same tolerance as a layer's, for the network's input precision)."""
    if network.max_abs_err is None:  # PyTorch itself
        return
    tolerance = TOLERANCES.get(str(compressed.input_dtype).removeprefix("torch."), TOLERANCES["float32"])
    if not network.max_abs_err <= tolerance:
        raise WrongOutput(f"{backend} output differs from PyTorch by {network.max_abs_err:.3g} "
                          f"(tolerance {tolerance})")


def _failure(error: Exception) -> dict:
    return {"status": "failed", "error": one_line(error)}


def results_frame(store: ResultStore, model_label: str, dataset: str, metric: str,
                  study: ParetoSpec | None = None) -> pd.DataFrame:
    """One row per variant, backend and thread count: accuracy, memory and latency together."""
    variants = store.frame("pareto_variants", model=model_label, dataset=dataset, metric=metric)
    latency = store.frame("pareto_latency", model=model_label, dataset=dataset)
    if study is not None:  # only what this run asked for
        variants = variants[variants.variant.isin([s.key for s in study.specs])]
        keys = {k for s in study.specs for k in study.latency_keys(s)}
        latency = latency[[tuple(r) in keys for r in latency[list(PARETO_LATENCY.key)].itertuples(index=False)]]
    keep = ["variant", "backend", "target", "threads", "trials", "status", "error", "median_ms", "p25_ms",
            "p75_ms", "std_ms", "repeats", "peak_bytes", "peak_method", "max_abs_err"]
    merged = variants.drop(columns=["id", "measured_at"]).rename(columns={"status": "variant_status",
                                                                          "error": "variant_error"})
    merged = merged.merge(latency[keep].rename(columns={"status": "latency_status", "error": "latency_error"}),
                          on="variant", how="left")
    return merged.sort_values(["backend", "threads", "technique", "strength"]).reset_index(drop=True)
