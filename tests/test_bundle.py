"""bundle (compile here) -> measure (TVM runtime only) -> import equals a direct sweep."""

import json
import re
import sqlite3

import numpy as np

from advisor.store.results import KEY_COLUMNS
from tests.conftest import run_advisor

POINTS = ["--model", "tinynet", "--layer", "conv2", "--channels", "8,16", "--trials", "0", "--threads", "1",
          "--repeats", "3"]


TIMING = ("median_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "p25_ms", "p75_ms", "repeats", "number",
          "max_abs_err")
# what differs between two measurements of one point, or between this machine's and a board's words for it
MEASURED = (*TIMING, "tuning_seconds", "id", "measured_at", "device", "cpu_model", "torch_version", "runs",
            "slower_run_ms")


def rows(db):
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return {tuple(row[c] for c in KEY_COLUMNS): dict(row) for row in connection.execute("SELECT * FROM points")}


def test_bundle_measure_import_matches_a_direct_sweep(tmp_path):
    direct = run_advisor("sweep", *POINTS, "--strategy", "exhaustive", "--db", "direct.db",
                         "--no-second-opinion", cwd=tmp_path)
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
    imported, swept = rows(tmp_path / "merged.db"), rows(tmp_path / "direct.db")
    assert sorted(imported) == sorted(swept) and len(imported) == 2
    for result in results["results"]:
        row = imported[tuple(result["key"][c] for c in KEY_COLUMNS)]
        # the board's numbers, every one of them, as results.json holds them
        assert {c: row[c] for c in TIMING} == {c: result[c] for c in TIMING}
        assert row["status"] == "ok" and 0 < row["min_ms"] <= row["median_ms"] and row["max_abs_err"] <= 1e-3
        assert row["device"] == results["device"] and row["tvm_version"] == results["tvm_version"]
        # and the point itself (key, geometry, tuning, target) as the direct sweep stored it
        same = swept[tuple(result["key"][c] for c in KEY_COLUMNS)]
        assert {c: v for c, v in row.items() if c not in MEASURED} == {
            c: v for c, v in same.items() if c not in MEASURED}


def test_a_variant_with_a_wrong_output_or_that_fails_or_hangs_on_the_board_is_recorded_as_failed(tmp_path):
    made = run_advisor("bundle", "board", *POINTS, "--channels", "8,16,24", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    board = tmp_path / "board"
    arrays = dict(np.load(board / "c16.npz"))  # the correctness gate: a reference that is not the kernel's
    arrays["reference"] = arrays["reference"] + 0.01
    np.savez(board / "c16.npz", **arrays)
    (board / "c24.so").write_bytes(b"\x7fELF broken")  # a library that cannot load
    measured = run_advisor("measure", "board", "--timeout", "120", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    results = json.loads((board / "results.json").read_text())["results"]
    assert [r["status"] for r in results] == ["ok", "failed", "failed"]
    assert results[0]["max_abs_err"] <= 1e-3
    assert re.fullmatch(r"TVM output differs from PyTorch by 0\.01\d* \(tolerance 0\.001\)", results[1]["error"])
    assert "failed to load dynamic shared library" in results[2]["error"].lower(), results[2]
    merged = run_advisor("import", "board", cwd=tmp_path)
    assert "imported 1 measured and 2 failed" in merged.stderr
    stored = {row["channels"]: row for row in rows(tmp_path / "advisor.db").values()}
    assert stored[16]["status"] == "failed" and stored[16]["error"] == results[1]["error"]
    assert stored[16]["median_ms"] is None  # a wrong output has no latency

    # a variant that outlasts --timeout (here every one: loading TVM alone takes longer) counts as hung
    measured = run_advisor("measure", "board", "--timeout", "0.05", cwd=tmp_path)
    assert measured.returncode == 0, measured.stderr
    errors = [r["error"] for r in json.loads((board / "results.json").read_text())["results"]]
    assert errors == ["hung: no result within 0.05 s"] * 3


def test_import_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_advisor("import", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "run `advisor bundle` first" in result.stderr
    result = run_advisor("measure", "empty", cwd=tmp_path)
    assert result.returncode == 2 and "not a bundle" in result.stderr
