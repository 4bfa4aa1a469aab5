"""OpenCL code generation: a tuned layer's kernels compile on an OpenCL implementation (PoCL)."""

from pathlib import Path

import pytest

from advisor.model.layers import ConvLayer

pytest.importorskip("pyopencl")
SCHEDULES = Path(__file__).resolve().parents[1] / "data" / "h100" / "schedules" / "nvidia-nvidia-h100"
# ResNet-18 conv3 at 64 output channels, as tuned on the H100 (data/h100)
CONV3 = ConvLayer("conv3", "layer1.0.conv2", (1, 64, 56, 56), 64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, False)


def test_tuned_layer_kernels_compile_on_pocl():
    from advisor.compile.opencl import build_with_opencl, compile_opencl, kernel_sources

    (tuned,) = kernel_sources(compile_opencl(CONV3, SCHEDULES))
    (default,) = kernel_sources(compile_opencl(CONV3))
    assert "__kernel void" in tuned and "__local" in tuned  # the tuned schedule tiles through local memory
    assert tuned != default
    assert build_with_opencl(tuned, "portable") == ["conv2d_kernel"]
    assert build_with_opencl(default, "portable")


def test_broken_kernel_is_a_clear_error():
    from advisor.errors import AdvisorError
    from advisor.compile.opencl import build_with_opencl

    with pytest.raises(AdvisorError, match="rejects the kernels"):
        build_with_opencl("__kernel void k(__global float* x) { x[0] = undefined_name; }", "portable")
