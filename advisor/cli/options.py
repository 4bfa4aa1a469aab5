"""Option values that need parsing: channel counts (`32..256`, `32..256:8`, `48,64,96`), lists of
numbers and of thread counts."""

from __future__ import annotations

import re

from advisor.errors import AdvisorError

DEFAULT_STEP = 32
_RANGE = re.compile(r"^\s*(-?\d+)\s*\.\.\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?$")
_LIST = re.compile(r"^\s*-?\d+(\s*,\s*-?\d+)*\s*$")


def parse_channels(spec: str, default_step: int = DEFAULT_STEP) -> list[int]:
    """Return the sorted channel counts a spec names; raise AdvisorError if it is bad."""
    match = _RANGE.match(spec or "")
    if match:
        start, stop = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) is not None else default_step
        if step < 1:
            raise AdvisorError(f"channel range {spec!r}: the step must be at least 1")
        if start > stop:
            raise AdvisorError(f"channel range {spec!r} is reversed: write {stop}..{start}")
        counts = list(range(start, stop + 1, step))
        if counts[-1] != stop:
            counts.append(stop)  # the end of the range is always measured
    elif _LIST.match(spec or ""):
        counts = sorted({int(part) for part in spec.split(",")})
    else:
        raise AdvisorError(
            f"malformed channel range {spec!r}: expected START..STOP[:STEP] or a list like 32,48,64"
        )
    if not counts:
        raise AdvisorError(f"channel range {spec!r} is empty")
    if counts[0] < 1:
        raise AdvisorError(f"channel range {spec!r} includes {counts[0]}: channels must be at least 1")
    return counts


def parse_floats(text: str, option: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AdvisorError(f"{option} {text!r}: expected numbers separated by commas, e.g. 0.5,0.7") from None
    if not values:
        raise AdvisorError(f"{option} is empty")
    return values


def parse_thread_counts(text: str) -> list[int]:
    """`1,all` or `1,4`: the thread counts a study times."""
    import os

    counts = []
    for part in text.split(","):
        part = part.strip()
        if part == "all":
            counts.append(os.cpu_count() or 1)
        elif part.isdigit() and int(part) >= 1:
            counts.append(int(part))
        else:
            raise AdvisorError(f"--threads {text!r}: expected counts such as 1,all or 1,4")
    return sorted(set(counts))
