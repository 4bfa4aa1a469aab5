"""Open an `advisor pareto` page in headless Chromium and save a screenshot.

    python benchmarks/pareto_screenshot.py out/pareto-tinynet-digits.html out/pareto-tinynet-digits.png

Needs Chromium (Debian: apt-get install -y chromium). The page carries plotly inline, so no network is used.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html: Path, png: Path, size: str = "1400,2400", timeout: int = 120) -> Path:
    browser = find_browser()
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install -y chromium")
    if not html.is_file():
        raise SystemExit(f"{html} does not exist")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}",
                        "--virtual-time-budget=10000", f"--screenshot={png.resolve()}", f"--window-size={size}",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=timeout)
    if not png.is_file():
        raise SystemExit(f"Chromium wrote no screenshot to {png}")
    return png


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
