"""Transfer of tuned schedules between neighbouring channel counts (real MetaSchedule tuning)."""

import math
import subprocess
import sys

import numpy as np
import pytest

from advisor.board.runtime import first_output
from advisor.compile.build import compile_layer, layer_reference
from advisor.compile.relax_import import to_relax
from advisor.compile.targets import parse_target
from advisor.compile.transfer import changed_size, nearest_tiling, shape_signature
from advisor.compile.tuning import ScheduleCache, tune
from advisor.measure.backends import TOLERANCES
from advisor.model.layers import ConvLayer
from conftest import REPO

TOLERANCE = TOLERANCES["float32"]
TINY = ConvLayer("tiny", "tiny", (1, 8, 8, 8), 8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
TRIALS = 4


@pytest.fixture(scope="module")
def target():
    return parse_target("llvm", 2)


def _tune_source(root, target, trials: int = TRIALS):
    """A tuning directory holding the tiny conv at 16 channels, tuned with an empty database."""
    conv, x = TINY.build()
    outcome = tune(to_relax(conv, x)[0], ScheduleCache(root, target), trials)
    assert outcome.transferred == 0 and outcome.transferred_from == () and outcome.trials_run == trials
    return ScheduleCache(root, target)


def _task_mod(layer, target):
    from tvm.s_tir.meta_schedule.relax_integration import extract_tasks

    conv, x = layer.build()
    (task,) = extract_tasks(to_relax(conv, x)[0], target.tvm_target())
    return task.dispatched[0]


def test_neighbour_schedules_are_replayed_measured_and_committed(target, tmp_path):
    import tvm

    cache = _tune_source(tmp_path, target)
    layer = TINY.with_out_channels(24)
    compiled = compile_layer(layer, TRIALS, cache)
    executable, inputs, reference, outcome = compiled.executable, compiled.inputs, compiled.reference, compiled.outcome

    assert outcome.transferred == TRIALS // 2 and outcome.transferred_from == (16,)
    assert outcome.trials_run == TRIALS and not outcome.reused
    database = cache.open()
    mod = _task_mod(layer, target)
    records = database.get_top_k(database.commit_workload(mod), 100)
    assert len(records) == TRIALS
    assert all(math.isfinite(float(s)) and 0 < float(s) < 1 for r in records for s in r.run_secs)

    # every record of the new count (transferred ones included) computes the convolution correctly
    conv, x = layer.build()
    weight = conv.weight.detach().numpy()
    for record in records:
        sch = tvm.s_tir.Schedule(mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        kernel = tvm.compile(sch.mod, target=target.tvm_target())
        out = tvm.runtime.tensor(np.zeros(reference.shape, "float32"))
        kernel(tvm.runtime.tensor(x.numpy()), tvm.runtime.tensor(weight), out)
        assert np.abs(out.numpy() - reference).max() <= TOLERANCE

    # and so does the compiled layer, built from the best of them
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    output = first_output(vm["main"](*[tvm.runtime.tensor(a) for a in inputs])).numpy()
    assert np.abs(output - layer_reference(conv, x)).max() <= TOLERANCE


def test_workload_without_neighbours_tunes_normally(target, tmp_path):
    cache = _tune_source(tmp_path, target, trials=2)
    other = ConvLayer("other", "other", (1, 8, 16, 16), 8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
    conv, x = other.build()
    outcome = tune(to_relax(conv, x)[0], cache, 2)
    # 16x16 instead of 8x8 changes several sizes (16, padded 18, bound 17): not a neighbour
    assert outcome.transferred == 0 and outcome.transferred_from == () and outcome.trials_run == 2


def test_tuned_records_are_applied_without_the_tensor_intrinsics_unless_they_tensorize(target, tmp_path):
    """Importing TVM's tensor intrinsics costs 11 s a process; applying float32 records does not
    need them (the compiled layer is still right), a record that tensorizes does."""
    cache = _tune_source(tmp_path, target, trials=2)
    assert not cache.tensorizes()
    code = f"""
import sys
import numpy as np
import tvm
from advisor.board.runtime import first_output
from advisor.compile.build import compile_layer
from advisor.compile.targets import parse_target
from advisor.compile.tuning import ScheduleCache
from advisor.model.layers import ConvLayer
layer = ConvLayer("tiny", "tiny", (1, 8, 8, 8), 8, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)
compiled = compile_layer(layer, 2, ScheduleCache({str(tmp_path)!r}, parse_target("llvm", 2)))
assert compiled.outcome.reused and compiled.outcome.trials_run == 0
vm = tvm.relax.VirtualMachine(compiled.executable, tvm.cpu())
output = first_output(vm["main"](*[tvm.runtime.tensor(a) for a in compiled.inputs])).numpy()
print(np.abs(output - compiled.reference).max(), "tvm.s_tir.tensor_intrin" in sys.modules)
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    error, imported = run.stdout.split()
    assert float(error) <= TOLERANCE and imported == "False"
    records = cache.directory / "database_tuning_record.json"
    line = records.read_text().splitlines()[0]
    records.write_text(line.replace('"Split"', '"Tensorize"', 1) + "\n")
    assert cache.tensorizes()


def test_signatures_find_one_changed_size(target):
    sixteen, seventeen = (shape_signature(_task_mod(TINY.with_out_channels(c), target)) for c in (16, 17))
    assert sixteen[0] == seventeen[0]
    assert changed_size(sixteen[1], seventeen[1]) == (16, 17)
    wider = shape_signature(_task_mod(ConvLayer("w", "w", (1, 8, 16, 16), 8, 16, (3, 3), (1, 1), (1, 1),
                                                (1, 1), 1, False), target))
    assert changed_size(sixteen[1], wider[1]) is None


def test_nearest_tiling():
    assert nearest_tiling([2, 1, 4, 2], 16, 64) == [2, 1, 4, 2]  # still valid: kept
    assert math.prod(nearest_tiling([2, 2, 4, 4], 72, 64)) == 72
    assert nearest_tiling([1, 1, 8, 8], 72, 64) == [1, 1, 8, 9]
    assert nearest_tiling([2, 2, 4, 4], 65, 64) == [1, 1, 5, 13]  # not TVM's fallback [1, 1, 1, 65]
    assert nearest_tiling([1, 64], 65, 16) == [5, 13]  # innermost within max_innermost_factor
