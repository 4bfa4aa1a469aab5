"""Checks of the options that the measuring commands share (sweep, recommend, pareto), in one
place: the specs run them, and the CLI runs them before it loads a model, so that a bad option
fails at once rather than after an export."""

from __future__ import annotations

from advisor.errors import AdvisorError

COST_MODELS = ("xgb", "random")  # MetaSchedule's search cost models


def check_measuring(*, trials: int | None = None, repeats: int | None = None, cost_model: str | None = None,
                    dtype: str | None = None, backend: str | None = None) -> None:
    """Raise AdvisorError (one line) for the first bad value given; None means not asked."""
    if backend is not None:
        from advisor.measure.backends import get_backend

        get_backend(backend)
    if trials is not None and trials < 0:
        raise AdvisorError("--trials must be 0 or more")
    if repeats is not None and repeats < 2:
        raise AdvisorError("--repeats must be at least 2 (a spread needs two samples)")
    if cost_model is not None and cost_model not in COST_MODELS:
        raise AdvisorError(f"unknown cost model {cost_model!r}: use {' or '.join(COST_MODELS)}")
    if dtype is not None:
        from advisor.model.layers import DTYPES

        if dtype not in DTYPES:
            raise AdvisorError(f"unknown dtype {dtype!r}: use {' or '.join(DTYPES)}")
