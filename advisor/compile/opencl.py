"""OpenCL code generation: compile a (tuned) layer for an OpenCL device, and check its kernels.

TVM's wheel generates OpenCL C but has no OpenCL runtime, so a board with an OpenCL-enabled
TVM runtime runs the exported library (advisor bundle --target opencl). Here the kernels can
still be compiled by an OpenCL implementation (PoCL, through pyopencl), which catches code the
board's driver would reject. GPU schedules carry over: thread bindings tuned for CUDA apply to
OpenCL as they stand, so a schedule database tuned on one GPU drives the OpenCL code too.
"""

from __future__ import annotations

import json
from pathlib import Path

from advisor.errors import AdvisorError
from advisor.model.layers import ConvLayer
from advisor.compile.targets import TargetSpec, host_llvm_config
from advisor.compile.tuning import ScheduleCache


def opencl_target() -> TargetSpec:
    """OpenCL kernels with this machine's CPU (LLVM) as the host."""
    config = {"kind": "opencl", "host": host_llvm_config()}
    return TargetSpec("opencl", json.dumps(config, sort_keys=True), "opencl")


def compile_opencl(layer: ConvLayer, schedules: str | Path | None = None, dtype: str = "float32"):
    """Compile one variant for OpenCL with the schedules under `schedules` (a MetaSchedule
    database folder; dlight's default GPU schedules for whatever it lacks)."""
    from advisor.compile.build import compile_layer

    cache = ScheduleCache("tuning_logs", opencl_target())
    if schedules is not None:
        if not (Path(schedules) / "database_tuning_record.json").is_file():
            raise AdvisorError(f"{schedules} holds no MetaSchedule database (database_tuning_record.json)")
        cache.directory = Path(schedules)
    return compile_layer(layer, 0, cache, dtype=dtype).executable


def kernel_sources(executable) -> list[str]:
    """The OpenCL C source of every device module the executable imports."""
    sources, stack = [], [executable.mod]
    while stack:
        module = stack.pop()
        if module.kind == "opencl":
            sources.append(module.inspect_source())
        stack.extend(module.imports)
    if not sources:
        raise AdvisorError("the compiled layer holds no OpenCL module")
    return sources


def build_with_opencl(source: str, platform_name: str | None = None) -> list[str]:
    """Compile OpenCL C with an installed implementation; return its kernels' names."""
    try:
        import pyopencl as cl
    except ImportError:
        raise AdvisorError("pyopencl is not installed: pip install pyopencl") from None
    try:
        platforms = cl.get_platforms()
    except cl.Error:
        platforms = []
    chosen = [p for p in platforms if platform_name is None or platform_name.lower() in p.name.lower()]
    if not chosen:
        raise AdvisorError("no OpenCL platform here" + (f" named {platform_name!r}" if platform_name else "")
                           + ": install an ICD such as pocl-opencl-icd")
    context = cl.Context(devices=chosen[0].get_devices()[:1])
    try:
        program = cl.Program(context, source).build()
    except cl.RuntimeError as error:
        raise AdvisorError(f"OpenCL ({chosen[0].name}) rejects the kernels: {str(error).strip()[-300:]}") from None
    return [kernel.function_name for kernel in program.all_kernels()]
