"""Parse channel-count specifications: `32..256`, `32..256:8`, or a list `48,64,96`."""

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
