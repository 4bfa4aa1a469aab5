"""The measuring backends behind one interface (base.Backend), registered once: the only place
that tells them apart by name."""

from __future__ import annotations

from advisor.errors import AdvisorError
from advisor.measure.backends.base import TOLERANCES, Backend, Network, Unavailable, WrongOutput  # noqa: F401
from advisor.measure.backends.torch_backend import TorchBackend
from advisor.measure.backends.tvm_backend import TvmBackend

BACKENDS: dict[str, Backend] = {backend.name: backend for backend in (TvmBackend(), TorchBackend())}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise AdvisorError(f"unknown backend {name!r}: use {' or '.join(BACKENDS)}")
    return BACKENDS[name]
