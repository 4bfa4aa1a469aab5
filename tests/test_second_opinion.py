"""Second opinions: suspects are re-measured (in this process, or a fresh one for PyTorch on CUDA) and the
faster run is kept."""

import pandas as pd
import pytest

from advisor.model.layers import conv_layers, find_layer
from advisor.model.loading import load_model
from advisor.learn.second_opinion import FreshProcess, ThisProcess, confirm, second_runner, suspects
from advisor.store.results import ResultStore
from advisor.measure.sweep import SweepSpec, run_sweep, series_frame
from advisor.compile.targets import parse_target
from advisor.board.timing import TimingPolicy


def _plan(tmp_path, counts, backend="torch", trials=0):
    loaded = load_model("tinynet")
    layer = find_layer(conv_layers(loaded), "conv4")
    return SweepSpec(loaded.label, loaded.input_shape, layer, counts, backend, parse_target("llvm", 1), trials, 1,
                     str(tmp_path / "tuning_logs"), policy=TimingPolicy(repeats=5, min_sample_ms=5))


def test_traps_and_points_above_the_prior_are_suspects_and_active_sweeps_skip_traps():
    rows = pd.DataFrame({"channels": [8, 9, 16, 24, 32], "min_ms": [1.0, 1.5, 1.1, 1.2, 1.3],
                         "median_ms": [1.0] * 5, "status": ["ok"] * 5, "runs": [1, 1, 1, 1, 2]})
    # 9 is slower than 16, 24 and 32: a trap; 24 sits 50% above what a model predicted for it
    assert suspects(rows, prior={24: 0.8, 32: 1.3}) == [9, 24]
    # an active sweep asks only about points above its model: 9 was not among the predicted picks
    assert suspects(rows, prior={24: 0.8, 32: 1.3}, traps=False) == [24]
    rows.loc[rows.channels == 9, "runs"] = 2  # already given a second opinion: not asked again
    assert suspects(rows, prior={}) == []


@pytest.mark.parametrize("where", ["this process", "a fresh process"])
def test_a_planted_slow_run_is_replaced_by_a_second_run(tmp_path, where):
    plan = _plan(tmp_path, [8, 16, 24, 32])
    with ResultStore(tmp_path / "r.db") as store:
        run_sweep(plan, store)
        # plant what a process stuck in a slow state records: 16 channels three times slower
        row = store.frame(channels=16).iloc[0].to_dict()
        real_ms = row["min_ms"]
        planted = {k: v for k, v in row.items() if k != "id"} | {"min_ms": real_ms * 3, "median_ms": real_ms * 3}
        store.save({k: (v.item() if hasattr(v, "item") else v) for k, v in planted.items()})
        with (ThisProcess() if where == "this process" else FreshProcess(1)) as process:
            outcome = confirm(plan, store, process=process)
        after = series_frame(plan, store).set_index("channels")
    assert 16 in outcome.suspects and 16 in outcome.changed
    assert after.loc[16, "runs"] == 2 and after.loc[16, "slower_run_ms"] == real_ms * 3
    assert after.loc[16, "min_ms"] < real_ms * 2  # the second run measured it at its real speed
    assert set(after.runs.fillna(1)) <= {1, 2}


def test_a_tuned_point_gets_its_second_opinion_from_the_schedule_cache(tmp_path):
    plan = _plan(tmp_path, [8, 16], backend="tvm", trials=2)
    with ResultStore(tmp_path / "r.db") as store:
        run_sweep(plan, store)
        row = store.frame(channels=8).iloc[0].to_dict()
        planted = {k: v for k, v in row.items() if k != "id"} | {"min_ms": row["min_ms"] * 50}
        store.save({k: (v.item() if hasattr(v, "item") else v) for k, v in planted.items()})
        outcome = confirm(plan, store)
        after = series_frame(plan, store).set_index("channels")
    assert outcome.suspects == [8] and after.loc[8, "runs"] == 2
    assert after.loc[8, "max_abs_err"] <= 1e-3 and after.loc[8, "min_ms"] < row["min_ms"] * 50


def test_second_runs_need_a_fresh_process_only_where_cudnn_chooses_per_process(tmp_path):
    from dataclasses import replace

    plan = _plan(tmp_path, [8])
    assert isinstance(second_runner(plan), ThisProcess)
    assert isinstance(second_runner(replace(plan, backend="tvm")), ThisProcess)
    cuda = replace(plan, target=parse_target("cuda", 1))
    assert isinstance(second_runner(cuda), FreshProcess)  # nothing starts until it measures
