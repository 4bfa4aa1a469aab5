"""Compression techniques, each at a strength, each optionally fine-tuned afterwards.

- weight pruning: unstructured L1-magnitude pruning of every conv and linear weight, either one global
  threshold (`weight-global`) or the same sparsity in each layer (`weight-layer`);
- channel pruning: Torch-Pruning, the same ratio everywhere (`channel-uniform`) or an advisor plan file
  `{"layers": {"module.path": channels}}` (`channel-plan`);
- quantisation: float16 weights and activations (`fp16`) and int8 post-training static quantisation
  calibrated on training images (`int8`, PyTorch FX with the x86 engine). Quantised variants are not
  fine-tuned (that would be quantisation-aware training, which is not done here).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advisor.errors import AdvisorError
from advisor.model.datasets import Dataset
from advisor.model.training import finetune
from advisor.prune.groups import prune_by_plan, prune_uniform, read_plan

TECHNIQUES = {  # --techniques word -> techniques it expands to
    "weight": ("weight-global", "weight-layer"),
    "channel": ("channel-uniform", "channel-plan"),
    "quant": ("fp16", "int8"),
}
QUANTISED = ("fp16", "int8")


@dataclass(frozen=True)
class VariantSpec:
    technique: str  # baseline | weight-global | weight-layer | channel-uniform | channel-plan | fp16 | int8
    strength: float = 0.0  # sparsity or channel ratio removed; 0 for the others
    plan: str = ""  # the plan file, for channel-plan
    finetune: int = 0  # epochs of fine-tuning after compression

    @property
    def label(self) -> str:
        if self.technique.startswith(("weight", "channel-uniform")):
            text = f"{self.technique} {self.strength:.0%}"
        elif self.technique == "channel-plan":
            text = f"channel-plan {Path(self.plan).name}"
        else:
            text = self.technique
        return text + (f" +ft{self.finetune}" if self.finetune else "")

    @property
    def key(self) -> str:
        return f"{self.technique}|{self.strength:g}|{self.plan}|ft{self.finetune}"


@dataclass
class Compressed:
    module: nn.Module
    input_dtype: torch.dtype = torch.float32
    notes: dict = field(default_factory=dict)


def variant_specs(techniques: list[str], sparsities: list[float], ratios: list[float], plans: list[str],
                  finetune: int) -> list[VariantSpec]:
    """The baseline plus every technique at every strength asked for."""
    unknown = [t for t in techniques if t not in TECHNIQUES]
    if unknown:
        raise AdvisorError(f"unknown technique(s) {', '.join(unknown)}: use {', '.join(TECHNIQUES)}")
    for value in [*sparsities, *ratios]:
        if not 0.0 < value < 1.0:
            raise AdvisorError(f"strength {value} must be between 0 and 1 (exclusive)")
    specs = [VariantSpec("baseline")]
    if "weight" in techniques:
        specs += [VariantSpec(t, s, finetune=finetune) for t in TECHNIQUES["weight"] for s in sparsities]
    if "channel" in techniques:
        specs += [VariantSpec("channel-uniform", r, finetune=finetune) for r in ratios]
        for plan in plans:
            read_plan(plan)  # a bad plan fails before any work
            specs.append(VariantSpec("channel-plan", plan=str(plan), finetune=finetune))
    if "quant" in techniques:
        specs += [VariantSpec(t) for t in QUANTISED]
    return specs


def compress(spec: VariantSpec, model: nn.Module, dataset: Dataset, seed: int = 0) -> Compressed:
    """A compressed copy of the trained model (the original is not touched)."""
    model = copy.deepcopy(model).eval()
    example = torch.zeros(dataset.input_shape())
    if spec.technique == "baseline":
        return Compressed(model)
    if spec.technique in ("weight-global", "weight-layer"):
        return Compressed(*_weight_prune(model, spec, dataset, seed))
    if spec.technique == "channel-uniform":
        model = prune_uniform(model, example, spec.strength)
        return Compressed(_finetuned(model, spec, dataset, seed), notes={"channels": conv_widths(model)})
    if spec.technique == "channel-plan":
        model, notes = prune_by_plan(model, example, read_plan(spec.plan))
        return Compressed(_finetuned(model, spec, dataset, seed), notes=notes)
    if spec.technique == "fp16":
        return Compressed(model.half(), torch.float16)
    if spec.technique == "int8":
        return Compressed(quantise_int8(model, dataset.x_train, seed))
    raise AdvisorError(f"unknown technique {spec.technique!r}")


def _finetuned(model: nn.Module, spec: VariantSpec, dataset: Dataset, seed: int) -> nn.Module:
    return finetune(model, dataset, spec.finetune, seed)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _weight_prune(model: nn.Module, spec: VariantSpec, dataset: Dataset, seed: int) -> tuple:
    from torch.nn.utils import prune

    targets = prunable_weights(model)
    if spec.technique == "weight-global":
        prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=spec.strength)
    else:
        for module, name in targets:
            prune.l1_unstructured(module, name, amount=spec.strength)
    _finetuned(model, spec, dataset, seed)  # the masks stay in force while fine-tuning
    for module, name in targets:
        prune.remove(module, name)
    total = sum(m.weight.numel() for m, _ in targets)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    return model, torch.float32, {"weight_sparsity": round(zeros / total, 4)}


def conv_widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def quantise_int8(model: nn.Module, calibration: torch.Tensor, seed: int = 0, samples: int = 256) -> nn.Module:
    """Post-training static int8 (PyTorch FX, x86 engine), calibrated on `samples` training images."""
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    generator = torch.Generator().manual_seed(seed)
    sample = calibration[torch.randperm(len(calibration), generator=generator)[:samples]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping("x86"), (sample[:1],))
        with torch.inference_mode():
            for start in range(0, len(sample), 64):
                prepared(sample[start:start + 64])
        return convert_fx(prepared).eval()
