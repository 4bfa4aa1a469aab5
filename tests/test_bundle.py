"""bundle (compile here) -> measure (TVM runtime only) -> import equals a direct sweep."""

import json
import sqlite3

from advisor.store.results import KEY_COLUMNS
from tests.conftest import run_advisor

POINTS = ["--model", "tinynet", "--layer", "conv2", "--channels", "8,16", "--trials", "0", "--threads", "1",
          "--repeats", "3"]


def keys(db):
    with sqlite3.connect(db) as connection:
        return sorted(connection.execute(f"SELECT {', '.join(KEY_COLUMNS)}, status FROM points").fetchall())


def test_bundle_measure_import_matches_a_direct_sweep(tmp_path):
    direct = run_advisor("sweep", *POINTS, "--db", "direct.db", cwd=tmp_path)
    assert direct.returncode == 0, direct.stderr

    made = run_advisor("bundle", "board", *POINTS, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "board" / "manifest.json").read_text())
    assert [p["columns"]["channels"] for p in manifest["points"]] == [8, 16]
    assert all((tmp_path / "board" / p["library"]).is_file() for p in manifest["points"])

    measured = run_advisor("measure", "board", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    results = json.loads((tmp_path / "board" / "results.json").read_text())
    assert results["compiler_loaded"] is False  # the TVM runtime alone ran them
    assert [r["status"] for r in results["results"]] == ["ok", "ok"]

    merged = run_advisor("import", "board", "--db", "merged.db", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert keys(tmp_path / "merged.db") == keys(tmp_path / "direct.db")
    assert len(keys(tmp_path / "merged.db")) == 2


def test_a_variant_that_fails_or_hangs_on_the_board_is_recorded_as_failed(tmp_path):
    made = run_advisor("bundle", "board", *POINTS, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    (tmp_path / "board" / "c16.so").write_bytes(b"\x7fELF broken")  # a library that cannot load
    measured = run_advisor("measure", "board", "--timeout", "120", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    statuses = [r["status"] for r in json.loads((tmp_path / "board" / "results.json").read_text())["results"]]
    assert statuses == ["ok", "failed"]
    merged = run_advisor("import", "board", cwd=tmp_path)
    assert "imported 1 measured and 1 failed" in merged.stderr

    # a variant that outlasts --timeout (here every one: loading TVM alone takes longer) counts as hung
    measured = run_advisor("measure", "board", "--timeout", "0.05", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    errors = [r["error"] for r in json.loads((tmp_path / "board" / "results.json").read_text())["results"]]
    assert errors == ["hung: no result within 0.05 s"] * 2


def test_import_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_advisor("import", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "run `advisor bundle` first" in result.stderr
    result = run_advisor("measure", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "not a bundle" in result.stderr
