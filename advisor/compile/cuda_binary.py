"""CUDA device code compiled when a module is built (a fatbin for the target's arch), so that a
board loads it with TVM's runtime alone, no compiler.

TVM turns CUDA source into device code only where its CUDA runtime library (libtvm_runtime_cuda,
which needs the driver's libcuda to load) is loaded; elsewhere it keeps the source, to be compiled
when loaded, which needs TVM's compiler. On a host with no driver, a stand-in libcuda with no
devices lets that library load; nvcc (or NVRTC) then compiles the kernels (docs/boards.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import subprocess
from pathlib import Path

from advisor.errors import AdvisorError

STUB_SOURCE = r"""
/* libcuda stand-in with no devices (advisor): lets TVM's CUDA runtime library load where no driver
   is installed, so that kernels are compiled to device code at build time. Every call fails. */
#define NO_DEVICE 100
static const char *message = "CUDA_ERROR_NO_DEVICE (advisor's stand-in libcuda: no driver here)";
int cuGetErrorName(int error, const char **text) { *text = message; return 0; }
int cuGetErrorString(int error, const char **text) { *text = message; return 0; }
int cuInit(unsigned flags) { return NO_DEVICE; }
int cuDriverGetVersion(int *version) { *version = 0; return NO_DEVICE; }
int cuDeviceGetName(char *name, int length, int device) { return NO_DEVICE; }
int cuFuncSetAttribute(void *f, int attribute, int value) { return NO_DEVICE; }
int cuLaunchKernelEx(const void *config, void *f, void **params, void **extra) { return NO_DEVICE; }
int cuModuleGetFunction(void **f, void *module, const char *name) { return NO_DEVICE; }
int cuModuleLoadData(void **module, const void *image) { return NO_DEVICE; }
int cuModuleUnload(void *module) { return NO_DEVICE; }
int cuTensorMapEncodeTiled(void) { return NO_DEVICE; }
"""


def _stub_libcuda() -> Path:
    folder = Path(os.environ.get("ADVISOR_CACHE", Path.home() / ".cache" / "advisor")) / "cuda-stub"
    library = folder / "libcuda.so.1"
    if not library.is_file():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise AdvisorError("compiling CUDA device code on a host without a GPU driver needs a C compiler (cc)")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stub.c").write_text(STUB_SOURCE)
        scratch = folder / f"libcuda.so.1.{os.getpid()}"
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(scratch),
                        str(folder / "stub.c")], check=True, capture_output=True)
        scratch.replace(library)  # atomic: a concurrent bundle sees the old file or the new one
    return library


def compile_device_code_ahead() -> None:
    """Make TVM compile CUDA kernels to device code when it builds a module (idempotent)."""
    import tvm  # noqa: F401  (TVM's runtime first: the device library links against it)
    from tvm.base import _LOADED_LIBS

    from advisor.board.runtime import load_device_runtime

    if "tvm_runtime_cuda" not in _LOADED_LIBS:
        if ctypes.util.find_library("cuda") is None:
            ctypes.CDLL(str(_stub_libcuda()), ctypes.RTLD_GLOBAL)  # matched by its soname from here on
        load_device_runtime("cuda")
    if "tvm_runtime_cuda" not in _LOADED_LIBS:
        raise AdvisorError("TVM's CUDA runtime library did not load: CUDA kernels would stay source code")
    try:
        import cuda.bindings  # noqa: F401  (NVRTC, TVM's default CUDA compiler)
    except ImportError:
        os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
        if shutil.which("nvcc") is None:
            raise AdvisorError("compiling CUDA device code needs nvcc (or NVRTC: pip install cuda-bindings)") from None
    import tvm.support.nvcc  # noqa: F401  (registers the compile callback TVM's CUDA codegen calls)
