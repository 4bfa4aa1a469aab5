"""CUDA bundles carry device code (a fatbin for the board's architecture), not CUDA source: a board
loads them with TVM's runtime alone. Made here without a GPU; timed on the GPU machine
(scripts/gpu_boards.sh)."""

import json
import shutil

import pytest

from conftest import run_advisor

FATBIN_MAGIC = bytes.fromhex("50ed55ba")
POINTS = ["--model", "tinynet", "--layer", "conv4", "--channels", "8,16", "--trials", "0", "--threads", "1"]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_bundle_holds_device_code_for_the_boards_arch(tmp_path):
    target = json.dumps({"kind": "cuda", "arch": "sm_90"})
    made = run_advisor("bundle", "b", *POINTS, "--target", target, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["target_kind"] == "cuda" and len(manifest["points"]) == 2
    for point in manifest["points"]:
        library = (tmp_path / "b" / point["library"]).read_bytes()
        assert FATBIN_MAGIC in library, "no fatbin: the board would need a compiler"
        assert b"__global__" not in library, "CUDA source left in the library"


def test_cuda_bundle_without_an_architecture_is_a_one_line_error(tmp_path):
    result = run_advisor("bundle", "b", *POINTS, "--target", "cuda", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: a CUDA bundle needs the board's architecture")
