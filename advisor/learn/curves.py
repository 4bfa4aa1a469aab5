"""Latency curves (latency against channels) and their steps: traps (a larger count runs faster)
and hardware-friendly counts. A curve's points are measured or predicted (by an active sweep's
model); traps are reported among measured points only, steps that involve a predicted point apart."""

from __future__ import annotations

from dataclasses import dataclass

NOISE = 0.03  # relative difference below which two latencies count as equal


@dataclass(frozen=True)
class CurvePoint:
    channels: int
    median_ms: float
    p25_ms: float
    p75_ms: float
    measured: bool = True  # False: the model's prediction (no spread of samples)


@dataclass(frozen=True)
class Trap:
    channels: int
    median_ms: float
    faster_channels: int  # the larger count that runs fastest
    faster_ms: float

    @property
    def cost_ms(self) -> float:
        return self.median_ms - self.faster_ms

    @property
    def slowdown(self) -> float:
        return self.median_ms / self.faster_ms


def _clearly_slower(slow: CurvePoint, fast: CurvePoint, noise: float) -> bool:
    return slow.median_ms > fast.median_ms * (1 + noise) and slow.p25_ms > fast.p75_ms


def find_traps(points: list[CurvePoint], noise: float = NOISE) -> list[Trap]:
    """Counts slower than some larger count, beyond noise and beyond both spreads."""
    ordered = sorted(points, key=lambda p: p.channels)
    traps = []
    for index, point in enumerate(ordered):
        larger = ordered[index + 1:]
        if not larger:
            continue
        fastest = min(larger, key=lambda p: p.median_ms)
        if _clearly_slower(point, fastest, noise):
            traps.append(Trap(point.channels, point.median_ms, fastest.channels, fastest.median_ms))
    return traps


def friendly_counts(points: list[CurvePoint], noise: float = NOISE) -> list[int]:
    """Counts that no larger count matches in speed: the top of each step."""
    ordered = sorted(points, key=lambda p: p.channels)
    friendly = []
    for index, point in enumerate(ordered):
        if all(other.median_ms > point.median_ms * (1 + noise) for other in ordered[index + 1:]):
            friendly.append(point.channels)
    return friendly


def step_report(points: list[CurvePoint], noise: float = NOISE, checks: dict[int, str] | None = None) -> dict:
    """Friendly counts and traps (with what each costs) as plain data, for JSON export. `checks`:
    each count's second look at its trap (second_look: confirmed, luck-replay, luck-retune)."""
    ordered = sorted(points, key=lambda p: p.channels)
    by_count = {p.channels: p for p in ordered}
    measured = [p for p in ordered if p.measured]
    checks = checks or {}

    def trap(t: Trap) -> dict:
        return {"channels": t.channels, "median_ms": t.median_ms, "use_instead": t.faster_channels,
                "use_instead_ms": t.faster_ms, "cost_ms": t.cost_ms, "slowdown": t.slowdown}

    traps = find_traps(measured, noise)
    return {
        "channels": [p.channels for p in ordered],
        "measured": [p.channels for p in measured],
        "predicted": [p.channels for p in ordered if not p.measured],
        "friendly": [{"channels": c, "median_ms": by_count[c].median_ms, "measured": by_count[c].measured}
                     for c in friendly_counts(ordered, noise)],
        # a trap a second look removed is not reported (it is tuning luck, below); `check`: the
        # second look's verdict, None where there was none (an untuned backend, or not looked at yet)
        "traps": [trap(t) | {"check": checks.get(t.channels)} for t in traps
                  if not checks.get(t.channels, "").startswith("luck")],
        # steps of the curve that involve a predicted count: the model's, not measured
        "predicted_traps": [trap(t) for t in find_traps(ordered, noise)
                            if not (by_count[t.channels].measured and by_count[t.faster_channels].measured)],
        # traps a second look removed: the search's luck, not the hardware's
        "tuning_luck": [{"channels": c, "removed_by": verdict.removeprefix("luck-")}
                        for c, verdict in sorted(checks.items()) if verdict.startswith("luck")],
        "noise": noise,
    }


def curve(rows) -> list[CurvePoint]:
    """A curve from stored rows of one series (a DataFrame with channels and the timing columns);
    predicted rows (status `predicted`) give points at their predicted latency."""
    points = []
    for r in rows.itertuples():
        if getattr(r, "status", "ok") == "predicted":
            points.append(CurvePoint(int(r.channels), r.predicted_ms, r.predicted_ms, r.predicted_ms, False))
        else:
            points.append(CurvePoint(int(r.channels), r.median_ms, r.p25_ms, r.p75_ms))
    return points
