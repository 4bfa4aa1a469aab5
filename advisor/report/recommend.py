"""What `advisor recommend` shows: the plan as a table and the measured comparison as lines."""

from __future__ import annotations

from rich.table import Table


def plan_table(title: str, groups, counts: dict[str, int]) -> Table:
    table = Table(title=title)
    for column in ("group (root conv)", "original", "keep", "convs"):
        table.add_column(column, justify="left" if column.startswith(("group", "convs")) else "right")
    for group in groups:
        keep = counts[group.name]
        table.add_row(group.name, str(group.channels), str(keep) if keep < group.channels else "-",
                      ", ".join(group.out_convs))
    return table


def recommendation_lines(result, budget_ms: float) -> list[str]:
    """What a measured recommendation says, line by line (advisor.prune.recommend.Recommendation)."""
    plan, params = result.plan, result.parameters
    error = result.recommended_ms / plan.predicted_ms - 1
    drifted = result.predicted_at_check_ms
    met = "met" if result.recommended_ms <= budget_ms else "MISSED when measured"
    return [
        f"unpruned: {result.unpruned_ms:.3f} ms measured, {params['unpruned']:,} parameters",
        f"recommended: predicted {plan.predicted_ms:.3f} ms, measured {result.recommended_ms:.3f} ms "
        f"({error:+.1%} vs prediction; budget {budget_ms:g} ms {met}), {params['recommended']:,} parameters, "
        f"{plan.importance_kept:.1%} of importance kept",
        f"the machine's speed during the check: unpruned {result.unpruned_ms:.3f} ms beside the plan, "
        f"{result.calibration_unpruned_ms:.3f} ms at calibration; the prediction at that speed "
        f"{drifted:.3f} ms (measured {result.recommended_ms / drifted - 1:+.1%} against it)",
        f"uniform pruning at equal parameters (keep ratio {result.uniform_keep_ratio:.3f}): measured "
        f"{result.uniform_ms:.3f} ms, {params['uniform']:,} parameters",
        f"recommended / uniform latency: {result.recommended_ms / result.uniform_ms:.3f}",
    ]
