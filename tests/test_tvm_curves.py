"""Tuned-TVM curves: tuning stopped by its rule, every count by default, a trap's second look,
float16 layers (CUDA code generated here; run where a GPU exists)."""

import json
import math
import shutil
from dataclasses import replace

import numpy as np
import pytest

from advisor.board.runtime import first_output
from advisor.board.timing import TimingPolicy
from advisor.compile.build import layer_reference, layer_module
from advisor.compile.relax_import import to_relax
from advisor.compile.targets import parse_target
from advisor.compile.tuning import BATCH, FAILED, ScheduleCache, StopRule, default_gpu_schedules, tune
from advisor.learn.second_look import check_traps
from advisor.measure.backends import TOLERANCES
from advisor.measure.sweep import SweepSpec, run_sweep, series_frame
from advisor.model.layers import ConvLayer
from advisor.store.results import ResultStore
from conftest import run_advisor

TINY = ConvLayer("tiny", "tiny", (1, 8, 8, 8), 8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
# large enough that a parallel, vectorised schedule beats the plain loop nest by far
MID = ConvLayer("mid", "mid", (1, 16, 16, 16), 16, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)


def test_stop_rule_reads_the_history_in_order():
    rule = StopRule.for_cap(64)
    assert (rule.cap, rule.patience) == (64, 16) and StopRule.for_cap(512).patience == 128
    assert StopRule.for_cap(32).patience == StopRule.for_cap(4).patience == 16
    improving = [1.0 - 0.01 * i for i in range(40)]  # 1% better every trial: 16% over any 16
    assert rule.stop(improving) is None
    plateau = [1.0, 0.5] + [0.6] * 16  # nothing better than 0.5 in the last 16
    assert rule.stop(plateau) == "converged" and rule.stop(plateau[:-1]) is None
    assert rule.stop([0.5] + [0.495] * 16) == "converged"  # 1% better is not better
    assert rule.stop([0.5] + [0.48] * 16) is None  # 4% is
    assert rule.stop([FAILED] * 17) is None  # nothing that ran: no best to settle
    assert rule.stop(improving + [1.0] * 24) == "cap"


def test_tuning_stops_by_its_rule_before_the_cap_and_resumes_from_its_records(tmp_path):
    """A patient rule would run to the cap; this one (8 trials, 'better' only if 50% better) stops a
    tiny layer's search early. Its records say so, so a second call tunes nothing."""
    cache = ScheduleCache(tmp_path, parse_target("llvm", 2))
    rule = StopRule(cap=48, patience=8, tolerance=0.5)
    mod = layer_module(TINY)
    outcome = tune(mod, cache, rule.cap, rule=rule)
    assert outcome.stopped == "converged" and outcome.trials_run == outcome.trials_spent < rule.cap
    (task_mod,) = [m for m in _task_mods(mod, cache)]
    history = cache.history(task_mod)
    assert len(history) == outcome.trials_spent and rule.stop(history) == "converged"
    # it stopped at the first round's end at which the rule allowed (the rule is checked between
    # rounds of min(BATCH, patience) candidates)
    assert rule.stop(history[:-min(BATCH, rule.patience)]) is None
    again = tune(mod, cache, rule.cap, rule=rule)
    assert again.reused and again.trials_run == 0 and again.trials_spent == outcome.trials_spent


def _task_mods(mod, cache):
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    return [task.dispatched[0] for task in extract_tasks(mod, cache.target.tvm_target())]


def test_a_range_means_every_count_and_predictions_are_marked(workdir):
    # --max-points: on a loaded CI machine the active stop once never fired and all 45 counts were
    # measured, leaving nothing predicted to check; the cap keeps this test about the marking
    run_advisor("sweep", "--model", "tinynet", "--layer", "conv4", "--channels", "4..48", "--backend", "torch",
                "--threads", "1", "--repeats", "5", "--max-points", "30", cwd=workdir, check=True)
    shown = json.loads(run_advisor("show", "--format", "json", cwd=workdir, check=True).stdout)
    assert sorted(r["channels"] for r in shown) == list(range(4, 49))  # every count, default active
    measured = [r for r in shown if r["status"] == "ok"]
    predicted = [r for r in shown if r["status"] == "predicted"]
    assert measured and predicted and len(measured) + len(predicted) == 45
    assert all(r["median_ms"] is None and r["predicted_ms"] > 0 and r["predicted_spread"] >= 0
               and 0 <= r["model_cv_within"] <= 1 for r in predicted)
    steps = json.loads(run_advisor("steps", cwd=workdir, check=True).stdout)["series"][0]
    assert steps["channels"] == list(range(4, 49)) and steps["model"] == "tinynet"
    assert sorted(steps["measured"]) == sorted(r["channels"] for r in measured)
    assert sorted(steps["predicted"]) == sorted(r["channels"] for r in predicted)
    assert 0 <= steps["latency_model"]["cv_within_10pct"] <= 1
    assert all(t["channels"] in steps["measured"] for t in steps["traps"])  # traps stand on measurements
    table = run_advisor("show", cwd=workdir, check=True).stdout
    assert "predicted" in table and "~" in table
    page = run_advisor("plot", "--layer", "conv4", "--output", "p.html", cwd=workdir, check=True)
    assert "wrote p.html" in page.stderr and "predicted: torch" in (workdir / "p.html").read_text()

    run_advisor("sweep", "--model", "tinynet", "--layer", "conv4", "--channels", "50..58", "--backend", "torch",
                "--threads", "1", "--repeats", "5", "--strategy", "exhaustive", cwd=workdir, check=True)
    shown = json.loads(run_advisor("show", "--format", "json", cwd=workdir, check=True).stdout)
    assert sorted(r["channels"] for r in shown if r["status"] == "ok" and r["channels"] >= 50) == list(range(50, 59))


def _naive_record(cache, layer):
    """Commit the layer's unscheduled loop nest (one thread, no vectorising) with its measured run
    time as its only record: a search that found nothing better."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    from advisor.compile.transfer import measure

    target = cache.target.tvm_target()
    (task,) = extract_tasks(layer_module(layer), target)
    sch = Schedule(task.dispatched[0])
    builder, runner = ms.builder.LocalBuilder(max_workers=1), ms.runner.LocalRunner()
    (secs,) = measure([sch], target, builder, runner)
    database = cache.open()
    database.commit_tuning_record(ms.database.TuningRecord(
        sch.trace, database.commit_workload(task.dispatched[0]), secs, target,
        ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))


def test_a_trap_removed_by_a_replayed_schedule_is_luck(tmp_path):
    """16 channels given only its unscheduled loop nest runs slower than 32 tuned: a trap of the
    search, not of the hardware. Replaying 32's schedule on 16 removes it."""
    # timed on one thread: TVM's pool in a process the CLI did not start may run no more here (a
    # point asking for more is recorded as failed, since its row would name threads it did not use)
    spec = SweepSpec("mid", MID.input_shape, MID, [16, 32], "tvm", parse_target("llvm", 2), 1, 1,
                     str(tmp_path / "tuning_logs"), policy=TimingPolicy(repeats=5, min_sample_ms=5))
    _naive_record(ScheduleCache(spec.tuning_root, spec.target), MID.with_out_channels(16))
    with ResultStore(tmp_path / "r.db") as store:
        run_sweep(spec, store)  # a cap of 1: 16 holds its one record, 32 gets one trial
        before = series_frame(spec, store).set_index("channels")
        assert before.median_ms[16] > 1.2 * before.median_ms[32], "no trap to look at"
        (check,) = check_traps(spec, store)
        after = series_frame(spec, store).set_index("channels")
    assert (check.channels, check.faster_channels, check.verdict) == (16, 32, "luck-replay")
    assert after.trap_check[16] == "luck-replay" and after.median_ms[16] < before.median_ms[16]
    assert after.runs[16] == 2 and after.trials_spent[16] == 2  # 32's replayed schedule is its record now
    steps = json.loads(run_advisor("steps", "--db", tmp_path / "r.db", cwd=tmp_path, check=True).stdout)
    (series,) = steps["series"]
    assert series["tuning_luck"] == [{"channels": 16, "removed_by": "replay"}] and series["traps"] == []


def test_float16_layer_outputs_float16_on_the_cpu():
    layer = TINY.with_out_channels(13)
    for bias in (False, True):  # with a bias TVM 0.27's own importer fails (float32 meets float16)
        import tvm

        conv, x = replace(layer, bias=bias).build(dtype="float16")
        mod, weights = to_relax(conv, x)
        vm = tvm.relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
        output = first_output(vm["main"](*[tvm.runtime.tensor(a) for a in [x.numpy(), *weights]])).numpy()
        assert output.dtype == np.float16
        assert np.abs(output.astype(np.float32) - layer_reference(conv, x)).max() <= TOLERANCES["float16"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_float16_layer_cuda_code_writes_half_from_a_float_accumulator():
    """CUDA code generated without a GPU; run and checked where one exists."""
    import tvm

    layer = ConvLayer("tiny", "tiny", (1, 8, 8, 8), 8, 13, (3, 3), (1, 1), (1, 1), (1, 1), 1, True)
    conv, x = layer.build(dtype="float16")
    mod, weights = to_relax(conv, x)
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    with target, tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(default_gpu_schedules()(mod), target=target)
    (cuda,) = [m for m in executable.mod.imports[0].imports if m.kind == "cuda"]
    source = cuda.inspect_source()
    kernel = next(line for line in source.splitlines() if "__global__" in line and "conv2d" in line)
    assert "fused_conv2d_cast_add" in kernel and kernel.split("_kernel(", 1)[1].startswith("half*")  # writes half
    body = source.split(kernel.rstrip(";"), 1)[1]
    assert "float conv2d" in body.split("}", 1)[0]  # accumulates in float
    if not tvm.cuda().exist:
        return
    device = tvm.cuda()
    vm = tvm.relax.VirtualMachine(executable, device)
    output = first_output(vm["main"](*[tvm.runtime.tensor(a, device) for a in [x.numpy(), *weights]])).numpy()
    assert output.dtype == np.float16
    assert np.abs(output.astype(np.float32) - layer_reference(conv, x)).max() <= TOLERANCES["float16"]
    assert math.isfinite(float(output.astype(np.float32).sum()))
