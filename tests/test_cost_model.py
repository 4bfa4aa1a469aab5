"""Cost model: features, fit/evaluate on real PyTorch measurements, save/load, steps export."""

import json

import numpy as np
import pandas as pd
import pytest

from advisor.learn.cost_model import LatencyModel, evaluate, fit
from advisor.errors import AdvisorError
from advisor.learn.features import baseline_design, feature_frame, layer_geometry
from advisor.model.layers import conv_layers, find_layer
from advisor.model.loading import load_model
from advisor.learn.curves import CurvePoint, step_report
from advisor.store.results import ResultStore
from advisor.measure.sweep import SweepSpec, run_sweep
from advisor.compile.targets import parse_target
from conftest import STEADY_TIMING, run_advisor


def _tiny_layer(input_shape=None):
    loaded = load_model("tinynet", input_shape)
    return loaded, find_layer(conv_layers(loaded), "conv4")


def test_features_see_alignment():
    _, layer = _tiny_layer()
    frame = pd.DataFrame([layer_geometry(layer.with_out_channels(c)) for c in (192, 193)])
    features = feature_frame(frame)
    assert features.loc[0, "out_div16"] == 1 and features.loc[1, "out_div16"] == 0
    assert features.loc[1, "out_mod16"] == 1 and features.loc[1, "out_waste16"] > 0
    assert features.loc[1, "log_flops"] > features.loc[0, "log_flops"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A real PyTorch sweep of a small layer, every count from 4 to 64 (at 64x64, so that its latency
    grows with the count: at TinyNet's own 8x8 the call's overhead is most of it)."""
    path = tmp_path_factory.mktemp("cm") / "r.db"
    loaded, layer = _tiny_layer("1x3x128x128")
    plan = SweepSpec(loaded.label, loaded.input_shape, layer, list(range(4, 65)), "torch", parse_target("llvm", 1),
                     0, 1, policy=STEADY_TIMING)
    with ResultStore(path) as store:
        run_sweep(plan, store)
        frame = store.frame()
    return path, frame


def test_fit_predicts_and_reports_held_out_accuracy(measured):
    _, frame = measured
    assert (frame.status == "ok").sum() == 61
    result = evaluate(frame, test_share=0.25, seed=1)
    assert result.test_points == 15 and result.train_points == 46
    # on points it never saw: most within 10%, and far closer than the curve's own spread (what
    # predicting one latency for every count would score)
    spread = float(np.abs(frame.min_ms.median() / frame.min_ms - 1).mean() * 100)
    assert result.within_10pct >= 0.8, result
    assert result.mean_abs_pct_error < min(10.0, spread / 3), (result, spread)
    model = fit(frame)
    predicted = model.predict(frame)
    assert predicted.shape == (61,) and np.all(predicted > 0)
    # trained on these points, the model must reproduce the curve's scale
    assert np.median(np.abs(predicted / frame.median_ms.to_numpy() - 1)) < 0.25


def test_model_round_trips_with_provenance(measured, tmp_path):
    path, frame = measured
    model = fit(frame, members=3, source=str(path))
    saved = model.save(tmp_path / "m.json")
    loaded = LatencyModel.load(saved)
    assert np.allclose(loaded.predict(frame), model.predict(frame), rtol=1e-5)
    assert loaded.provenance_["points"] == 61 and loaded.provenance_["source"] == str(path)
    assert loaded.provenance_["layers"] == ["conv4"] and len(loaded.provenance_["rows_sha256"]) == 64
    mean, spread = loaded.predict_spread(frame)
    assert np.allclose(spread, model.predict_spread(frame)[1], rtol=1e-5)  # all three members came back
    assert spread.max() > 0 and np.median(spread) < 0.1  # they disagree, a little, on their own data


def test_bad_model_files_and_too_little_data(tmp_path, measured):
    (tmp_path / "x.json").write_text("not json")
    with pytest.raises(AdvisorError, match="not an advisor cost model"):
        LatencyModel.load(tmp_path / "x.json")
    with pytest.raises(AdvisorError, match="does not exist"):
        LatencyModel.load(tmp_path / "missing.json")
    with pytest.raises(AdvisorError, match="too few"):
        fit(measured[1].head(2))


def test_step_report_finds_traps_and_friendly_counts():
    points = [CurvePoint(c, ms, ms * 0.99, ms * 1.01) for c, ms in [(32, 1.0), (33, 2.0), (48, 1.5), (64, 2.5)]]
    report = step_report(points)
    assert [t["channels"] for t in report["traps"]] == [33]
    assert report["traps"][0]["use_instead"] == 48 and report["traps"][0]["cost_ms"] == pytest.approx(0.5)
    assert [f["channels"] for f in report["friendly"]] == [32, 48, 64]


def test_cli_fit_and_steps(measured, tmp_path):
    path, _ = measured
    result = run_advisor("fit", "--db", path, "--output", tmp_path / "models", cwd=tmp_path, check=True)
    assert "within 10%" in result.stdout and (tmp_path / "models" / "cost_torch_llvm.json").is_file()
    saved = json.loads((tmp_path / "models" / "cost_torch_llvm.json").read_text())
    assert saved["provenance"]["held_out"]["test_points"] == 12
    result = run_advisor("steps", "--db", path, "--output", tmp_path / "steps.json", cwd=tmp_path, check=True)
    steps = json.loads((tmp_path / "steps.json").read_text())
    assert steps["format"] == "advisor-steps" and steps["series"][0]["layer"] == "conv4"
    assert steps["series"][0]["friendly"] and steps["series"][0]["channels"] == list(range(4, 65))
    bad = run_advisor("fit", "--db", tmp_path / "none.db", cwd=tmp_path)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def _geometry(counts):
    _, layer = _tiny_layer()
    return pd.DataFrame([layer_geometry(layer.with_out_channels(c)) for c in counts])


def test_the_hardware_tile_is_kept_unless_the_data_clearly_prefer_another():
    from advisor.learn.cost_model import fit_baseline

    aligned = _geometry(range(32, 257, 32))  # every tile pads these alike: the data cannot tell tiles apart
    latency = np.log(aligned.flops.to_numpy() * 1e-9)
    assert fit_baseline(aligned, latency)[0] == 1
    assert fit_baseline(aligned, latency, tile_prior=16)[0] == 16
    # a staircase of period 32 (with a little noise): padding to 16 misfits 33-47, 97-111, ... by far
    stairs = _geometry(range(32, 257, 3))
    wobble = 0.02 * np.cos(np.arange(len(stairs)))
    latency = baseline_design(stairs, 32) @ np.array([-20.0, 1.0, 0.0]) + wobble
    assert fit_baseline(stairs, latency, tile_prior=16)[0] == 32


def test_simd_lanes_of_targets():
    import json

    from advisor.compile.targets import simd_lanes

    haswell = parse_target(json.dumps({"kind": "llvm", "mcpu": "haswell"}))
    assert simd_lanes(haswell) == 8 and simd_lanes(haswell, "float16") == 16
    assert simd_lanes(parse_target(json.dumps({"kind": "llvm", "mcpu": "skylake-avx512"}))) == 16
    assert simd_lanes(parse_target("cuda")) is None


def test_host_target_without_tvm_reads_the_cpu_flags(monkeypatch):
    """A PyTorch-only machine (no TVM) still gets a host target and the same channel tile."""
    import sys

    from advisor.compile.targets import simd_lanes

    with_tvm = simd_lanes(parse_target("llvm", 1))
    monkeypatch.setitem(sys.modules, "tvm", None)  # import tvm now raises ImportError
    monkeypatch.setitem(sys.modules, "tvm.target", None)
    host = parse_target("llvm", 1)
    assert "mcpu" not in host.config
    assert simd_lanes(host) == with_tvm


def test_xgboost_is_imported_without_scikit_learn_which_stays_importable():
    import subprocess
    import sys

    # a fresh interpreter: this one may have imported both already
    code = ("import sys; from advisor.learn.cost_model import _xgboost; xgb = _xgboost(); "
            "assert 'sklearn' not in sys.modules, 'xgboost pulled in scikit-learn'; "
            "from sklearn.datasets import load_digits; import xgboost; assert xgb is xgboost; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-500:]
