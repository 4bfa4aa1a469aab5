"""Import a function that the user names as `path/file.py:function`."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from advisor.errors import AdvisorError, one_line


def load_user_function(spec: str, role: str) -> Callable:
    """The callable `function` of `path/file.py:function`; `role` names it in errors."""
    path_text, _, name = spec.rpartition(":")
    if not path_text or not name:
        raise AdvisorError(f"{role} {spec!r}: expected path/file.py:function")
    path = Path(path_text)
    if not path.is_file():
        raise AdvisorError(f"{role}: {path} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(f"advisor_user_{digest}", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        raise AdvisorError(f"{role}: importing {path} failed: {type(error).__name__}: {one_line(error, 300)}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise AdvisorError(f"{role}: {path} has no function {name!r}")
    return function
