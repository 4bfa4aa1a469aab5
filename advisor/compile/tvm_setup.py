"""Import TVM's tensor intrinsics without the 15 s that TVMScript spends in inspect.stack().

`tvm.s_tir.tensor_intrin` parses a few hundred TVMScript functions at import. For each one
the parser calls `inspect.stack()`, which reads source context for every frame; frames of
`<frozen importlib...>` fall back to scanning `sys.modules`, so the import costs ~15 s. The
parser only reads `code_context` of the third frame (`is_defined_in_class`), so giving
context to the first three frames keeps its behaviour and halves the cost.

MetaSchedule's builder imports the same package in every worker, and it starts a fresh
pool of workers for each batch of candidates. The candidates arrive already scheduled
(tensorised), so building them does not need the intrinsic registry: the workers get the
package registered without running its `__init__`, its submodules still importable.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types

_INTRIN = "tvm.s_tir.tensor_intrin"


def _stack_with_shallow_context(context: int = 1) -> list[inspect.FrameInfo]:
    frames: list[inspect.FrameInfo] = []
    frame = sys._getframe(1)
    while frame is not None:
        wants_source = len(frames) < 3 and not frame.f_code.co_filename.startswith("<")
        info = inspect.getframeinfo(frame, context if wants_source else 0)
        frames.append(inspect.FrameInfo(frame, *info, positions=info.positions))
        frame = frame.f_back
    return frames


def import_tensor_intrinsics() -> None:
    """Import (once) the tensor intrinsics MetaSchedule's schedule rules need."""
    if _INTRIN in sys.modules:
        return
    original = inspect.stack
    inspect.stack = _stack_with_shallow_context
    try:
        importlib.import_module(_INTRIN)
    finally:
        inspect.stack = original


def builder_worker_init() -> None:
    """Initializer of MetaSchedule builder workers (runs in each worker process)."""
    if _INTRIN in sys.modules:
        return
    spec = importlib.util.find_spec(_INTRIN)
    package = types.ModuleType(_INTRIN)
    package.__path__ = list(spec.submodule_search_locations or [])
    sys.modules[_INTRIN] = package
