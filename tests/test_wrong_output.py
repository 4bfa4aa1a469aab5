"""The correctness gate: a TVM kernel whose output is not PyTorch's (within 1e-3) is recorded as failed,
with how far it was off: a sweep's point (its neighbours measured as usual) and a Pareto study's
variant (PyTorch's timing of it kept).

The wrong kernel is planted the way a bad schedule would arrive: a tuning record in the schedule cache
whose trace stores the padded input as int8 (TVM's unsafe_set_dtype), which truncates every value."""

import math
import sqlite3

from advisor.compile.relax_import import to_relax
from advisor.compile.targets import parse_target
from advisor.compile.tuning import ScheduleCache
from advisor.model.layers import conv_layers, find_layer
from advisor.model.loading import load_model
from conftest import run_advisor

SWEEP = ["sweep", "--model", "tinynet", "--layer", "conv4", "--channels", "8,16", "--trials", "0", "--threads", "1",
         "--repeats", "2", "--strategy", "exhaustive", "--no-second-opinion"]


def plant_truncating_schedules(tuning_dir, mod, target) -> int:
    """Commit, as the best record of each convolution kernel of a Relax module, a schedule that rounds
    the kernel's input to integers; returns how many kernels got one."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    database = ScheduleCache(tuning_dir, target).open()
    planted = 0
    for task in extract_tasks(mod, target.tvm_target()):
        schedule = s_tir.Schedule(task.dispatched[0])
        try:
            padded = schedule.get_sblock("pad_temp")  # a convolution's padded input
        except Exception:
            continue  # not a convolution
        schedule.unsafe_set_dtype(padded, 0, "int8")
        workload = database.commit_workload(task.dispatched[0])
        database.commit_tuning_record(ms.database.TuningRecord(schedule.trace, workload, [1e-9],
                                                               target.tvm_target()))
        planted += 1
    return planted


def test_a_kernel_with_a_wrong_output_is_recorded_as_failed(workdir):
    layer = find_layer(conv_layers(load_model("tinynet")), "conv4").with_out_channels(16)
    mod, _ = to_relax(*layer.build())
    assert plant_truncating_schedules(workdir / "tuning_logs", mod, parse_target("llvm", 1)) == 1  # `--threads 1`
    result = run_advisor(*SWEEP, cwd=workdir)
    assert result.returncode == 1, result.stderr  # a failed point: the sweep says so in its status
    with sqlite3.connect(workdir / "advisor.db") as connection:
        rows = connection.execute("SELECT channels, status, error, median_ms, max_abs_err FROM points "
                                  "ORDER BY channels").fetchall()
    (c8, c16) = rows
    assert c8[:2] == (8, "ok") and c8[3] > 0 and c8[4] <= 1e-3  # the untouched count: default schedule, correct
    channels, status, error, median_ms, _ = c16
    assert (channels, status, median_ms) == (16, "failed", None), c16
    assert error.startswith("TVM output differs from PyTorch by ") and error.endswith("(tolerance 0.001)"), error
    off_by = float(error.split(" by ")[1].split()[0])
    assert off_by > 0.1  # truncated inputs: far off, not a rounding difference
    assert "c=16 failed: TVM output differs from PyTorch" in result.stderr


def test_a_network_with_a_wrong_kernel_is_recorded_as_failed_in_a_pareto_study(tmp_path):
    import torch

    from advisor.board.timing import TimingPolicy
    from advisor.model.datasets import load_digits
    from advisor.model.training import build_network
    from advisor.pareto.study import ParetoSpec, run_pareto
    from advisor.prune.compression import VariantSpec
    from advisor.store.results import ResultStore

    digits = load_digits()
    torch.manual_seed(0)
    network = build_network("tinynet", digits).eval()  # untrained: the gate looks at outputs, not scores
    target = parse_target("llvm", 1)
    mod, _ = to_relax(network, torch.zeros(digits.input_shape(1)))
    assert plant_truncating_schedules(tmp_path / "tuning", mod, target) >= 1
    study = ParetoSpec("tinynet-gate", digits, [VariantSpec("baseline")], ["tvm", "torch"], [1], target, 0,
                       str(tmp_path / "tuning"), TimingPolicy(warmup=1, repeats=2, min_sample_ms=1))
    with ResultStore(tmp_path / "p.db") as store:
        summary = run_pareto(study, network, store)
        rows = store.frame("pareto_latency").set_index("backend")
    assert rows.loc["tvm", "status"] == "failed" and math.isnan(rows.loc["tvm", "median_ms"])  # not timed
    assert rows.loc["tvm", "error"].startswith("tvm output differs from PyTorch by "), rows.loc["tvm", "error"]
    assert rows.loc["torch", "status"] == "ok"  # PyTorch's own timing of the same variant stands
    assert len(summary.failed) == 1 and "differs from PyTorch" in summary.failed[0]
