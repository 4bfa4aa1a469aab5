# One command to set up and run the main job, one to set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
ADVISOR := $(VENV)/bin/advisor

.PHONY: setup system-packages demo test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# A real sweep (TVM-tuned, capped at 16 tuned counts: on 2 cores the active stop seldom fires on a
# tuned curve, data/cpu/tvm-curve-2026-12-06; then PyTorch) of ResNet-18's conv3 on this CPU, an active sweep of
# every count 32..256 (PyTorch), the plot, and a recommendation: ResNet-18 (width 16) trained on
# digits resized to 32x32, pruned to half its latency, fine-tuned, and measured and scored beside
# Torch-Pruning at one ratio (plain and round_to=8) at the same budget.
demo: setup
	$(ADVISOR) layers --model resnet18-cifar
	$(ADVISOR) sweep --model resnet18-cifar --layer conv3 --channels 32..256 --max-points 16
	$(ADVISOR) sweep --model resnet18-cifar --layer conv3 --channels 32..256 --backend torch
	mkdir -p out
	$(ADVISOR) sweep --model resnet18-cifar --layer conv3 --channels 32..256 --backend torch --threads 1 --strategy active --db out/active.db
	$(ADVISOR) plot --layer conv3 --output out/conv3.html
	$(ADVISOR) recommend --model resnet18-w16 --data digits --budget-ms 50% --threads 1

system-packages:
	bash scripts/system-packages.sh

test: setup system-packages
	$(PY) -m pytest -q -x --durations=25

bench: setup
	$(PY) benchmarks/tvm_vs_torch.py

# The board and host images (docker/README.md), built with buildah from a debootstrapped base; a
# rebuild reuses cached layers. IMAGES="board host board-opencl" picks them.
.PHONY: images
images: system-packages
	bash scripts/build-images.sh $(IMAGES)
