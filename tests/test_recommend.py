"""recommend: Torch-Pruning units, surgery, planning and the CLI, on tinynet with real measurements."""

import json

import pytest
import torch

from advisor.errors import AdvisorError
from advisor.model.loading import load_model
from advisor.prune.groups import parameters, prune_to, channel_groups, uniform_at_parameters, uniform_counts
from advisor.model.layers import conv_layers
from advisor.prune.planner import MARGIN, conv_slots, next_aim
from advisor.prune.recommend import RecommendConfig, measure_networks, parse_budget, recommend
from advisor.store.results import ResultStore
from advisor.compile.targets import parse_target
from advisor.board.timing import TimingPolicy
from conftest import run_advisor


@pytest.mark.parametrize("text", ["abc", "", "-5", "0", "nan", "inf", "20ms"])
def test_malformed_budget(text):
    with pytest.raises(AdvisorError, match="budget"):
        parse_budget(text)


def test_after_a_plan_over_budget_the_aim_allows_for_a_slower_machine():
    aim = 20 * (1 - MARGIN)
    # the model was right in the units of the calibration, the machine 14% slower at the check
    drifted = next_aim(aim, 20.0, measured_ms=20.74, unpruned_at_calibration_ms=32.78, unpruned_at_check_ms=37.42)
    assert drifted == pytest.approx(20 * (1 - MARGIN) * 32.78 / 37.42)
    # the machine as fast as at calibration: the overshoot alone tightens the aim
    assert next_aim(aim, 20.0, 21.0, 35.0, 35.0) == pytest.approx(aim * 20 / 21)
    # a faster machine at the check never loosens it past the budget's margin
    assert next_aim(aim, 20.0, 20.5, 35.0, 30.0) == pytest.approx(aim * 20 / 20.5)


def test_units_respect_residual_and_depthwise_dependencies():
    loaded = load_model("tinynet")
    example = torch.randn(loaded.input_shape)
    units = {u.name: u for u in channel_groups(loaded.module, example)}
    # conv1's channels feed the depthwise conv2 and the residual add: one unit
    stem = next(u for u in units.values() if "conv1" in u.out_convs)
    assert "conv2" in stem.out_convs and "conv3" in stem.in_convs and stem.channels == 16
    counts = {stem.name: 9}
    pruned = prune_to(loaded.module, example, list(units.values()), counts)
    assert pruned.conv1.out_channels == 9 and pruned.conv2.groups == 9 and pruned.conv3.in_channels == 9
    assert pruned(example).shape == (1, 10)
    # the most important channels are the ones kept
    kept = stem.keep(9)
    assert torch.equal(pruned.conv1.weight, loaded.module.conv1.weight[kept])
    uniform, ratio = uniform_at_parameters(loaded.module, example, list(units.values()), parameters(pruned))
    assert 0 < ratio < 1 and abs(parameters(uniform) - parameters(pruned)) / parameters(pruned) < 0.15


def test_recommend_meets_a_reachable_budget(tmp_path):
    loaded = load_model("tinynet", "1x3x128x128")
    policy = TimingPolicy(repeats=5, min_sample_ms=5)
    example = torch.randn(loaded.input_shape)
    setup = RecommendConfig(loaded, "torch", parse_target("llvm", 1), 0, 1, str(tmp_path / "t"), policy, samples=4,
                  min_ratio=0.1)
    # reachable by construction, and needing pruning, even if the machine's speed moves between this
    # measurement and recommend's own: the geometric mean of the network and of the network with
    # every width at a quarter, timed interleaved as recommend times networks, about 0.63 of the
    # network's time, while recommend may prune to a tenth (0.30-0.37 of it at 128x128). A shared AMD
    # EPYC's speed moved tinynet by up to 46% within a minute; midway to the halved network at 64x64
    # (as before) held only for speeds 0.83-1.6 times this one's and failed 3 runs in 6
    units = channel_groups(loaded.module, example)
    quarter = prune_to(loaded.module, example, units, uniform_counts(units, 0.25))
    unpruned, quartered = measure_networks(setup, [loaded.module, quarter], example)
    budget = (unpruned * quartered) ** 0.5
    with ResultStore(tmp_path / "r.db") as store:
        result = recommend(setup, store, budget_ms=budget)
        stored = store.frame()
    assert result.plan.met and result.plan.predicted_ms <= budget
    assert len(stored) == result.fit_points and set(stored.backend) == {"torch"}
    assert result.recommended_ms > 0 and result.uniform_ms > 0
    # drift is judged against the calibration's reading of the unpruned network (the first anchor; on
    # this shared machine tinynet's latency moved 46% between calibration and check, so the two
    # readings are not compared here)
    assert result.calibration_unpruned_ms == result.calibration["measured_anchors_ms"][0] > 0
    assert result.predicted_at_check_ms == pytest.approx(
        result.plan.predicted_ms * result.unpruned_ms / result.calibration_unpruned_ms)
    counts = result.plan.counts
    assert any(counts[u.name] < u.channels for u in result.groups)
    assert parameters(result.pruned) == result.parameters["recommended"] < result.parameters["unpruned"]
    # the plan's convolutions were measured at the plan's own widths before it was built (all of
    # them unless the plans kept moving for REFINES rounds; widths like these are rarely sampled)
    def measured(variant):
        return ((stored.in_channels == variant.in_channels) & (stored.channels == variant.out_channels)
                & (stored.in_h == variant.input_shape[2]) & (stored.kernel_h == variant.kernel[0])
                & (stored.stride_h == variant.stride[0]) & (stored.status == "ok")).any()
    slots = conv_slots(conv_layers(loaded), result.groups)
    assert sum(measured(slot.variant(counts)) for slot in slots) >= len(slots) / 2
    plan = result.to_dict(setup)
    assert plan["budget_ms"] == pytest.approx(budget)
    assert {u["root"]: u["keep"] for u in plan["units"]} == counts


def test_recommend_compiles_and_measures_the_pruned_network_with_tvm(tmp_path):
    """The TVM path end to end, untuned (--trials 0) to stay short: layers and whole networks are
    compiled by TVM, and the pruned network's output still matches PyTorch's."""
    from advisor.compile.tuning import ScheduleCache
    from advisor.measure.backends.tvm_backend import TvmNetwork

    loaded = load_model("tinynet", "1x3x32x32")
    policy = TimingPolicy(repeats=3, min_sample_ms=5)
    target = parse_target("llvm", 1)
    cache = ScheduleCache(tmp_path / "t", target)
    example = torch.randn(loaded.input_shape)
    unpruned = TvmNetwork(loaded.module.eval(), example, cache, 0).time(policy)
    setup = RecommendConfig(loaded, "tvm", target, 0, 1, str(tmp_path / "t"), policy, samples=3)
    with ResultStore(tmp_path / "r.db") as store:
        result = recommend(setup, store, budget_ms=unpruned.median_ms * 0.75)
        stored = store.frame()
    assert set(stored.backend) == {"tvm"} and (stored.max_abs_err <= 1e-3).all()
    assert result.plan.met and result.recommended_ms > 0 and result.uniform_ms > 0
    assert parameters(result.pruned) < result.parameters["unpruned"]
    assert TvmNetwork(result.pruned, example, cache, 0).max_abs_err <= 1e-3


def test_cli_recommend_errors_and_outputs(tmp_path):
    bad = run_advisor("recommend", "--model", "tinynet", "--budget-ms", "twenty", cwd=tmp_path)
    assert bad.returncode == 2 and "malformed budget 'twenty'" in bad.stderr
    impossible = run_advisor("recommend", "--model", "tinynet", "--budget-ms", "0.0001", "--threads", "1",
                             "--samples", "4", "--repeats", "3", cwd=tmp_path)
    assert impossible.returncode == 2 and "cannot be met" in impossible.stderr
    assert "fastest plan found" in impossible.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["budget_met_predicted"] is False and plan["measured_ms"] is None
    reachable = run_advisor("recommend", "--model", "tinynet", "--budget-ms", "1000", "--threads", "1",
                            "--samples", "4", "--repeats", "3", cwd=tmp_path, check=True)
    assert "recommended / uniform latency" in reachable.stdout and "the prediction at that speed" in reachable.stdout
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["predicted_at_check_ms"] > 0 and plan["unpruned_at_calibration_ms"] > 0
    program = torch.export.load(str(tmp_path / "out" / "pruned.pt2"))
    assert program.module()(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


def test_measured_plans_scale_the_predictions(tmp_path):
    """Near the budget the line through the unpruned and the halved network ran 6-7% low; a plan
    measured over budget then sets a scale, so that the next plan is predicted from its reading."""
    from advisor.learn.cost_model import fit
    from advisor.prune.planner import Predictor
    from advisor.prune.recommend import Recommender

    loaded = load_model("tinynet", "1x3x32x32")
    setup = RecommendConfig(loaded, "torch", parse_target("llvm", 1), 0, 1, str(tmp_path / "t"),
                  TimingPolicy(repeats=3, min_sample_ms=2), samples=3)
    with ResultStore(tmp_path / "r.db") as store:
        recommender = Recommender(setup, store, budget_ms=1.0)
        recommender.measure_layers()
    units, slots = recommender.groups, recommender.slots
    predictor = Predictor(fit(recommender.rows), slots)
    full, half, plan = ({u.name: u.channels for u in units}, uniform_counts(units, 0.5), uniform_counts(units, 0.75))
    anchors_ms = list(0.1 + 1.5 * predictor.conv_sum([full, half]))  # on a line: the fit is exact
    predictor.calibrate([full, half], anchors_ms)
    assert predictor.scale == 1 and predictor.network([full, half]) == pytest.approx(anchors_ms)
    before = float(predictor.network([plan])[0])
    predictor.calibrate([full, half], anchors_ms, [plan], [before * 1.07])
    assert predictor.scale == pytest.approx(1.07) and predictor.network([plan])[0] == pytest.approx(before * 1.07)
    other = uniform_counts(units, 0.9)
    other_ms = float(predictor.network([other])[0]) / 1.07 * 0.95  # a second plan, 5% under the line
    predictor.calibrate([full, half], anchors_ms, [plan, other], [before * 1.07, other_ms])
    assert predictor.scale == pytest.approx((1.07 * 0.95) ** 0.5)
