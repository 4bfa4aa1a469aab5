"""An XGBoost model of layer latency, per backend and target, saved with its data's provenance.

The prediction is a log-log baseline (latency against FLOPs and bytes moved, least squares)
times a correction learned by gradient-boosted trees from the alignment features: the baseline
interpolates smoothly between measured counts, the trees learn the steps.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from advisor.errors import AdvisorError
from advisor.store.results import usable
from advisor.store.schema import SERIES
from advisor.learn.features import BASELINE_TILES, baseline_design, feature_frame
from advisor.learn.curves import CurvePoint, find_traps

FORMAT = "advisor-cost-model"
WITHIN = 0.10  # a prediction counts as right within 10% of the measured value
PRIOR_MARGIN = 1.5  # how much better (median residual) another tile must fit to beat the hardware's
# What the model learns: the fastest sample by default. Each sample already averages >= 20 ms of
# calls; on a shared machine the median still carries other processes' load, the minimum less so.
STATISTICS = {"min": "min_ms", "median": "median_ms"}
# min_child_weight 2: a leaf needs two points. With one, the ~20 points of an active sweep let a tree
# give a single count its own leaf through some residue it happens to share with no other point
# (conv3 at 150 channels was then predicted 11% off while 145 and 154 beside it were measured)
_PARAMS = {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.08, "min_child_weight": 2.0,
           "lambda": 1.0, "nthread": 1}


def _xgboost():
    """xgboost, imported without scikit-learn: xgboost imports it, if installed, only for its
    scikit-learn wrappers, which advisor does not use, and that took 0.55 s, an eighth of an active
    sweep of conv3 on this CPU. scikit-learn stays importable (advisor.model.datasets uses it)."""
    if "xgboost" in sys.modules:
        return sys.modules["xgboost"]
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # makes `import sklearn` raise ImportError
    try:
        import xgboost
    finally:
        if hide:
            del sys.modules["sklearn"]
    return xgboost


class LatencyModel:
    """The latency model as an estimator: parameters as given to the constructor; `fit(rows)`
    learns the attributes with a trailing underscore and returns the model; `predict` reads them."""

    def __init__(self, *, statistic: str = "min", rounds: int = 300, members: int = 1, seed: int = 0,
                 tile_prior: int | None = None) -> None:
        if statistic not in STATISTICS:
            raise AdvisorError(f"unknown statistic {statistic!r}: use {' or '.join(STATISTICS)}")
        self.statistic, self.rounds, self.members, self.seed = statistic, rounds, members, seed
        self.tile_prior = tile_prior  # the channel tile the hardware suggests (fit_baseline)

    def __repr__(self) -> str:
        return (f"LatencyModel(statistic={self.statistic!r}, rounds={self.rounds}, members={self.members}, "
                f"seed={self.seed}, tile_prior={self.tile_prior})")

    @property
    def column(self) -> str:
        """The measured column it predicts: min_ms or median_ms."""
        return STATISTICS[self.statistic]

    def fit(self, frame: pd.DataFrame, source: str = "") -> "LatencyModel":
        """Fit on measured rows of one backend and target (members > 1: a bootstrap ensemble)."""
        xgb = _xgboost()

        rows = usable(frame).reset_index(drop=True)
        pairs = rows[["backend", "target"]].drop_duplicates()
        if len(pairs) != 1:
            raise AdvisorError(f"a cost model covers one backend and target; these rows have {len(pairs)}")
        if len(rows) < 3:
            raise AdvisorError(f"too few measured points to fit a model ({len(rows)}; need at least 3)")
        target = np.log(rows[self.column].to_numpy())
        self.tile_, baseline = fit_baseline(rows, target, self.tile_prior)
        residual = target - baseline_design(rows, self.tile_) @ baseline
        features = varying(feature_frame(rows))
        generator = np.random.default_rng(self.seed)
        self.boosters_ = []
        for member in range(self.members):
            index = np.arange(len(rows)) if self.members == 1 else generator.integers(0, len(rows), len(rows))
            # plain arrays: with feature names xgboost re-checks them on every boosting round (slow)
            matrix = xgb.DMatrix(features.to_numpy()[index], label=residual[index])
            self.boosters_.append(xgb.train({**_PARAMS, "seed": self.seed + member}, matrix,
                                            num_boost_round=self.rounds))
        self.backend_, self.target_ = str(pairs.backend.iloc[0]), str(pairs.target.iloc[0])
        self.baseline_ = baseline.tolist()
        self.features_ = list(features.columns)
        self.provenance_ = _provenance(rows, source)
        return self

    def predict(self, rows: pd.DataFrame, features: pd.DataFrame | None = None) -> np.ndarray:
        return self.predict_spread(rows, features)[0]

    def predict_spread(self, rows: pd.DataFrame,
                       features: pd.DataFrame | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean prediction (ms) and the ensemble's relative spread (0 for a single model);
        `features`: feature_frame(rows), where the caller keeps it (an active sweep predicts the same
        candidates every round)."""
        xgb = _xgboost()

        if len(rows) == 0:
            return np.zeros(0), np.zeros(0)
        base = baseline_design(rows, self.tile_) @ np.asarray(self.baseline_)
        frame = feature_frame(rows) if features is None else features
        matrix = xgb.DMatrix((frame if self.features_ is None else frame[self.features_]).to_numpy())
        logs = np.stack([booster.predict(matrix) for booster in self.boosters_]) + base
        predictions = np.exp(logs)
        mean = predictions.mean(axis=0)
        return mean, predictions.std(axis=0) / mean

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"format": FORMAT, "backend": self.backend_, "target": self.target_, "statistic": self.statistic,
                    "tile": self.tile_, "features": self.features_, "baseline": self.baseline_,
                    "provenance": self.provenance_, "rounds": self.rounds, "seed": self.seed,
                    "boosters": [booster.save_raw("json").decode() for booster in self.boosters_]}
        path.write_text(json.dumps(document))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyModel":
        xgb = _xgboost()

        path = Path(path)
        if not path.is_file():
            raise AdvisorError(f"cost model {path} does not exist: run `advisor fit` first")
        try:
            document = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise AdvisorError(f"{path} is not an advisor cost model (not JSON)") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise AdvisorError(f"{path} is not an advisor cost model")
        boosters = []
        for raw in document["boosters"]:
            booster = xgb.Booster()
            booster.load_model(bytearray(raw.encode()))
            boosters.append(booster)
        model = cls(statistic=document.get("statistic", "median"), rounds=document.get("rounds", 300),
                    members=len(boosters), seed=document.get("seed", 0))
        model.backend_, model.target_ = document["backend"], document["target"]
        model.baseline_, model.boosters_ = document["baseline"], boosters
        model.tile_, model.features_ = document.get("tile", 1), document.get("features")
        model.provenance_ = document.get("provenance", {})
        return model


def fit(frame: pd.DataFrame, *, members: int = 1, seed: int = 0, rounds: int = 300,
        source: str = "", statistic: str = "min", tile_prior: int | None = None) -> LatencyModel:
    """LatencyModel(...).fit(frame): the one-call form most callers want."""
    return LatencyModel(statistic=statistic, rounds=rounds, members=members, seed=seed,
                        tile_prior=tile_prior).fit(frame, source)


def varying(features: pd.DataFrame) -> pd.DataFrame:
    """The columns that vary over the training rows: a tree cannot split on a constant one, so the
    trees are the same without them (checked on replays). In a sweep of one layer ~110 of ~150 are
    constant (its geometry, its input channels' residues); boosting 20 random rows took 2.5x longer
    with them, an active sweep's fits (small residuals, shallow trees) a few percent."""
    values = features.to_numpy()
    keep = np.ptp(values, axis=0) > 0
    if not keep.any():
        keep[list(features.columns).index("channels")] = True
    return features.loc[:, keep]


def fit_baseline(rows: pd.DataFrame, log_latency: np.ndarray,
                 tile_prior: int | None = None) -> tuple[int, np.ndarray]:
    """Robust (least absolute deviation) baseline with the channel tile that fits best: a kernel
    computing whole tiles of 16 channels makes latency a staircase of period 16. Absolute, not
    squared, error: a few counts where the library switches kernels must not pick the tile.
    The hardware's tile (tile_prior) is kept unless another fits with a median residual
    PRIOR_MARGIN times smaller: from ~20 points of an active sweep of conv3 on an AVX-512 CPU,
    tiles of 32, 8 or 1 won by chance in 14 of 30 live sweeps (16's median residual 1.04-2.11
    times theirs; 11 of them within 1.5), and a whole block was then predicted 10-35% off."""
    fits = {}
    for tile in BASELINE_TILES:
        design = baseline_design(rows, tile)
        weights = np.ones(len(rows))
        for _ in range(6):  # iteratively reweighted least squares towards least absolute deviation
            coefficients = np.linalg.lstsq(design * weights[:, None], log_latency * weights, rcond=None)[0]
            residual = log_latency - design @ coefficients
            weights = 1 / np.sqrt(np.maximum(np.abs(residual), 0.01))
        fits[tile] = (float(np.median(np.abs(residual))), coefficients)
    best = min(fits, key=lambda tile: fits[tile][0])
    if tile_prior in fits and fits[tile_prior][0] <= PRIOR_MARGIN * fits[best][0]:
        best = tile_prior
    return best, fits[best][1]


def _provenance(rows: pd.DataFrame, source: str) -> dict:
    ids = ",".join(f"{m}/{layer}/{c}/{t}/{at}" for m, layer, c, t, at in  # columns, not itertuples: rows are wide
                   zip(rows.model, rows.layer, rows.channels, rows.trials, rows.measured_at))
    versions = {column: sorted(rows[column].dropna().astype(str).unique().tolist())
                for column in ("tvm_version", "torch_version", "cpu_model", "device", "hostname")
                if column in rows}
    return {"source": source, "points": len(rows), "rows_sha256": hashlib.sha256(ids.encode()).hexdigest(),
            "models": sorted(rows.model.unique().tolist()), "layers": sorted(rows.layer.unique().tolist()),
            "trials": sorted(int(t) for t in rows.trials.unique()),
            "measured_from": str(rows.measured_at.min()), "measured_to": str(rows.measured_at.max()),
            "fitted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **versions}


@dataclass
class Evaluation:
    train_points: int
    test_points: int
    within_10pct: float  # share of held-out predictions within 10% of measured
    mean_abs_pct_error: float
    step_points: int  # held-out points at a step (a trap or the larger count that beats it)
    step_within_10pct: float | None
    step_mean_abs_pct_error: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def step_positions(frame: pd.DataFrame) -> set[tuple]:
    """(series..., channels) of every trap and of the larger count that runs faster than it."""
    positions = set()
    for values, rows in usable(frame).groupby(SERIES, sort=False):
        curve = [CurvePoint(int(r.channels), r.median_ms, r.p25_ms, r.p75_ms) for r in rows.itertuples()]
        for trap in find_traps(curve):
            positions |= {(*values, trap.channels), (*values, trap.faster_channels)}
    return positions


def score(model: LatencyModel, test: pd.DataFrame, steps: set[tuple]) -> Evaluation:
    test = usable(test)
    errors = np.abs(model.predict(test) / test[model.column].to_numpy() - 1)
    at_step = np.array([(*(getattr(r, c) for c in SERIES), r.channels) in steps for r in test.itertuples()],
                       dtype=bool)
    step_errors = errors[at_step]
    return Evaluation(0, len(test), float((errors <= WITHIN).mean()), float(errors.mean() * 100),
                      int(at_step.sum()),
                      float((step_errors <= WITHIN).mean()) if len(step_errors) else None,
                      float(step_errors.mean() * 100) if len(step_errors) else None)


def evaluate(frame: pd.DataFrame, *, test_share: float = 0.2, seed: int = 0, members: int = 1,
             statistic: str = "min") -> Evaluation:
    """Fit on a random (1 - test_share) of the points and score on the rest."""
    rows = usable(frame).reset_index(drop=True)
    if not 0 < test_share < 1:
        raise AdvisorError(f"--test-share must be between 0 and 1, not {test_share}")
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(round(len(rows) * test_share))
    if cut < 1 or len(rows) - cut < 3:
        raise AdvisorError(f"too few measured points ({len(rows)}) to hold some out and still fit")
    test, train = rows.iloc[order[:cut]], rows.iloc[order[cut:]]
    model = fit(train, members=members, seed=seed, statistic=statistic)
    result = score(model, test, step_positions(rows))
    result.train_points = len(train)
    return result
