"""What `advisor recommend` shows: the plan as a table, the networks compared as a table, and the
measured comparison as lines. Everything reads the plan's plain data (Recommendation.to_dict)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

NAMES = {"unpruned": "unpruned", "recommended": "recommended (advisor)",
         "uniform": "uniform (Torch-Pruning, one ratio)", "uniform-r8": "uniform, round_to=8"}


def plan_table(title: str, groups, counts: dict[str, int]) -> Table:
    table = Table(title=Text(title))  # Text: a path such as net.py:factory is not read as markup or emoji
    for column in ("group (root conv)", "original", "keep", "convs"):
        table.add_column(column, justify="left" if column.startswith(("group", "convs")) else "right")
    for group in groups:
        keep = counts[group.name]
        table.add_row(group.name, str(group.channels), str(keep) if keep < group.channels else "-",
                      ", ".join(group.out_convs))
    return table


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def networks_table(plan: dict) -> Table:
    """The four networks measured side by side: latency, its ratio to the unpruned network, the
    score before and after the same fine-tuning, parameters and FLOPs."""
    networks = plan["networks"]
    metric = plan.get("scoring", {}).get("metric", "accuracy")
    scored = any(n["score"] is not None for n in networks.values())
    unpruned = networks["unpruned"]["measured_ms"]
    table = Table(title=Text(f"measured side by side on {plan['backend']}/{plan['target']}, budget {plan['budget']}"
                             f" ({plan['budget_ms']:.3f} ms); uniform: Torch-Pruning at one keep ratio, "
                             f"uniform-r8: with round_to=8; before/after: the same fine-tuning"))
    columns = ["network", "keep", "ms", "x unpruned", "in budget"]
    if scored:
        short = "acc %" if metric == "accuracy" else "score"
        columns += [f"{short} before", f"{short} after"]
    columns += ["params", "MFLOPs"]
    for column in columns:
        table.add_column(column, justify="left" if column == "network" else "right", no_wrap=True)
    for name, network in networks.items():
        ms = network["measured_ms"]
        row = [name, "-" if network["keep_ratio"] is None else f"{network['keep_ratio']:.2f}",
               f"{ms:.3f}", f"{ms / unpruned:.3f}", "yes" if ms <= plan["budget_ms"] else "NO"]
        if scored:
            show = _percent if metric == "accuracy" else (lambda v: "-" if v is None else f"{v:.4g}")
            row += [show(network["score_before_finetune"]), show(network["score"])]
        row += [f"{network['parameters']:,}", f"{network['flops'] / 1e6:.1f}"]
        table.add_row(*row)
    return table


def recommendation_lines(plan: dict) -> list[str]:
    """What a measured recommendation says, line by line."""
    networks = plan["networks"]
    recommended, unpruned = networks["recommended"], networks["unpruned"]
    measured, predicted = recommended["measured_ms"], plan["predicted_ms"]
    met = "met" if plan["budget_met_measured"] else "MISSED when measured"
    drifted = plan["predicted_at_check_ms"]
    lines = [
        f"recommended: predicted {predicted:.3f} ms, measured {measured:.3f} ms ({measured / predicted - 1:+.1%} vs "
        f"prediction; budget {plan['budget']} = {plan['budget_ms']:.3f} ms {met}), "
        f"{plan['importance_kept']:.1%} of importance kept, {plan['plans_measured']} plan(s) measured",
        f"the machine's speed during the check: unpruned {unpruned['measured_ms']:.3f} ms beside the plan, "
        f"{plan['unpruned_at_calibration_ms']:.3f} ms at calibration; the prediction at that speed "
        f"{drifted:.3f} ms (measured {measured / drifted - 1:+.1%} against it)",
    ]
    for name in ("uniform", "uniform-r8"):
        if name not in networks:
            continue
        baseline = networks[name]
        found = "" if baseline["within_budget_when_searched"] else " (no keep ratio met the budget: the smallest)"
        line = (f"{NAMES[name]} at keep ratio {baseline['keep_ratio']:.2f}{found}: recommended / {name} latency "
                f"{measured / baseline['measured_ms']:.3f}")
        if recommended["score"] is not None and baseline["score"] is not None:
            line += f", score {recommended['score'] - baseline['score']:+.4f} against it"
        lines.append(line)
    if recommended["score"] is not None:
        lines.append(f"{plan['scoring']['metric']} after fine-tuning ({plan['scoring']['finetune_epochs']} epochs, "
                     f"{plan['scoring']['test_images']} held-out images of {plan['scoring']['dataset']}): "
                     f"recommended {recommended['score']:.4f}, unpruned {unpruned['score']:.4f} "
                     f"({recommended['score'] - unpruned['score']:+.4f})")
    return lines
