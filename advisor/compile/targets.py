"""Compilation targets: parse what the user wrote, name it, and say whether it can run here."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from advisor.board.runtime import device_for
from advisor.errors import AdvisorError, one_line

KNOWN_KINDS = ("llvm", "cuda", "opencl")


@dataclass(frozen=True)
class TargetSpec:
    """A TVM target as JSON (what TVM takes) plus the name the user gave it."""

    name: str  # as the user wrote it, e.g. "llvm", "cuda", "nvidia/nvidia-h100"
    config: str  # JSON dict or tag accepted by tvm.target.Target
    kind: str

    def tvm_target(self):
        import tvm

        try:
            return tvm.target.Target(_as_target_arg(self.config))
        except Exception as error:  # TVM raises many types here
            raise AdvisorError(f"TVM refuses target {self.name!r}: {one_line(error)}") from None

    @property
    def slug(self) -> str:
        """A directory name for this target's tuned schedules."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-")

    def device(self):
        return device_for(self.kind)

    @property
    def is_gpu(self) -> bool:
        return self.kind != "llvm"

    def can_run_here(self) -> bool:
        return bool(self.device().exist)


def _as_target_arg(config: str):
    return json.loads(config) if config.lstrip().startswith("{") else config


def host_llvm_config(threads: int | None = None) -> dict:
    """LLVM for this machine's CPU: without mcpu LLVM emits generic x86-64 (no AVX)."""
    cores = threads or os.cpu_count() or 1
    try:
        from tvm.target import codegen
    except ImportError:  # PyTorch-only sweeps (a GPU box without TVM) name the host CPU without LLVM
        return {"kind": "llvm", "num-cores": cores}
    return {"kind": "llvm", "mcpu": codegen.llvm_get_system_cpu(), "num-cores": cores}


def parse_target(text: str, threads: int | None = None) -> TargetSpec:
    """Accept `llvm`, `cuda`, `opencl`, a TVM tag, or a JSON dict; reject anything else."""
    text = (text or "").strip()
    if not text:
        raise AdvisorError("empty target: use llvm, cuda, opencl, a TVM tag or a JSON dict")
    if text == "llvm":
        return TargetSpec("llvm", json.dumps(host_llvm_config(threads)), "llvm")
    if text in ("cuda", "opencl"):
        return TargetSpec(text, json.dumps({"kind": text}), text)
    if text.startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as error:
            raise AdvisorError(f"target JSON does not parse: {error}") from None
        kind = config.get("kind") if isinstance(config, dict) else None
        if kind not in KNOWN_KINDS:
            raise AdvisorError(f"unknown target kind {kind!r}: use one of {', '.join(KNOWN_KINDS)}")
        spec = TargetSpec(_json_name(config), json.dumps(config, sort_keys=True), kind)
        spec.tvm_target()
        return spec
    if "/" in text:  # a TVM tag such as nvidia/nvidia-h100
        spec = TargetSpec(text, text, "")
        kind = str(spec.tvm_target().kind.name)
        if kind not in KNOWN_KINDS:
            raise AdvisorError(f"target {text!r} is of kind {kind!r}, which advisor does not support")
        return TargetSpec(text, text, kind)
    raise AdvisorError(
        f"unknown target {text!r}: use llvm, cuda, opencl, a TVM tag (nvidia/nvidia-h100) "
        "or a JSON dict"
    )


def _json_name(config: dict) -> str:
    extras = [f"{key}={config[key]}" for key in sorted(config) if key in ("mcpu", "arch", "device")]
    return "-".join([config["kind"], *extras])


VECTOR_BITS = (("avx512f", 512), ("avx2", 256), ("avx", 256))  # x86 features, widest first
DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "int8": 8}


def simd_lanes(spec: TargetSpec, dtype: str = "float32") -> int | None:
    """Elements of `dtype` in one vector register of a CPU target (16 float32 with AVX-512), or
    None (GPUs, unknown CPUs). Libraries block channels by this: oneDNN lays float32 out as
    nChw16c on AVX-512 and nChw8c on AVX2."""
    if spec.kind != "llvm" or dtype not in DTYPE_BITS:
        return None
    try:
        from tvm.target import codegen
    except ImportError:  # without TVM only the host can be asked, through the kernel's CPU flags
        is_host = "mcpu" not in json.loads(spec.config)
        bits = host_vector_bits() if is_host else None
        return None if bits is None else bits // DTYPE_BITS[dtype]

    target = spec.tvm_target()
    try:
        bits = next((width for feature, width in VECTOR_BITS
                     if codegen.target_has_features([feature], target)), None)
        if bits is None and codegen.target_has_features(["neon"], target):
            bits = 128
    except Exception:  # an LLVM without this architecture's backend cannot tell
        return None
    return None if bits is None else bits // DTYPE_BITS[dtype]


def host_vector_bits() -> int | None:
    """The widest vector register of this machine's CPU, from /proc/cpuinfo's flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = set()
            for line in info:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    flags |= set(line.split(":", 1)[1].split())
    except OSError:
        return None
    widths = [width for feature, width in VECTOR_BITS if feature in flags]
    if widths:
        return widths[0]
    return 128 if flags & {"asimd", "neon"} else None
