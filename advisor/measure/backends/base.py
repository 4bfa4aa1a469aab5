"""What every backend offers: measure one layer variant, or prepare a whole network and time it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from advisor.board.timing import Timing, TimingPolicy
from advisor.errors import AdvisorError

if TYPE_CHECKING:
    import torch

    from advisor.compile.targets import TargetSpec
    from advisor.measure.sweep import SweepSpec
    from advisor.model.layers import ConvLayer

# largest absolute difference from PyTorch's float32 output (same rounded inputs) that counts as correct
TOLERANCES = {"float32": 1e-3, "float16": 5e-2}


class WrongOutput(Exception):
    """The compiled layer disagrees with PyTorch: the point is recorded as failed."""


class Unavailable(AdvisorError):
    """The backend cannot run this network at all (not a measurement failure)."""


class Network(Protocol):
    """A network ready to time on one backend (compiled, loaded, on its device)."""

    max_abs_err: float | None  # against PyTorch's output (None: it is PyTorch)
    tuning_seconds: float

    def time(self, policy: TimingPolicy, threads: int) -> Timing:
        """Timed at `threads` CPU threads: required, since a process's current count is whatever its
        caller left (docs/timing.md)."""

    def peak(self) -> tuple[int | None, str]:
        """Memory taken while running, and how it was measured."""


class Backend(ABC):
    name: str
    title: str  # in words, for pages and tables
    tuned: bool  # compiles with MetaSchedule: trials apply, bundles and RPC boards are possible

    def trials_key(self, trials: int) -> int:
        """The trials a point is stored under (0 where trials do not apply)."""
        return trials if self.tuned else 0

    def check_target(self, target: TargetSpec) -> None:
        """AdvisorError if this backend cannot run on the target at all."""

    def second_opinion_in_fresh_process(self, target: TargetSpec) -> bool:
        """Whether a point's second run needs a new process to be independent of its first."""
        return False

    @abstractmethod
    def measure_layer(self, spec: SweepSpec, variant: ConvLayer) -> dict:
        """Timing columns (and how it was tuned) of one layer variant; raises on failure."""

    @abstractmethod
    def network(self, module: torch.nn.Module, example: torch.Tensor, target: TargetSpec, *,
                tuning_root: str = "tuning_logs", trials: int = 0, cost_model: str = "xgb") -> Network:
        """The network prepared for timing; raises Unavailable where this backend cannot run it."""

    def export_networks(self, networks: dict, example: torch.Tensor, directory: Path, target: TargetSpec,
                        policy: TimingPolicy, threads: int) -> Path | None:
        """Write prepared networks (name: (Network, the module whose weights it should carry)) as a
        deployable artifact that TVM's runtime alone loads and times (advisor.board.measure); the
        path of its manifest, or None where this backend compiles nothing to deploy."""
        return None
