"""What a recommendation measured beyond layer points, kept as it lands: each interleaved timing of
whole networks, under the run's fingerprint. A rerun of the same recommendation reads them back
instead of timing again, so it makes the same decisions and measures nothing already measured
(layer points live in the results database; trained and fine-tuned weights in the model cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = "advisor-recommend-journal"


class Journal:
    """Entries of one run (its fingerprint) in a JSON file, rewritten whole on each entry (written
    to a temporary file and renamed, so a kill leaves the old or the new file, never half of one).
    Without a path it lives in memory only."""

    def __init__(self, path: str | os.PathLike | None, fingerprint: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.fingerprint = fingerprint
        self.runs: dict[str, dict] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("format") == FORMAT:
                    self.runs = data.get("runs", {})
            except (OSError, ValueError):
                self.runs = {}  # unreadable: start again (layer points are safe in the database)

    def bind(self, fingerprint: str) -> "Journal":
        self.fingerprint = fingerprint
        return self

    @property
    def entries(self) -> dict:
        return self.runs.setdefault(self.fingerprint, {})

    def get(self, key: str):
        return self.entries.get(key)

    def put(self, key: str, value) -> None:
        self.entries[key] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_name(self.path.name + ".tmp")
        scratch.write_text(json.dumps({"format": FORMAT, "runs": self.runs}, indent=1))
        os.replace(scratch, self.path)
