"""advisor: which channel counts does your hardware like? Sweep, model, prune, prove."""

__version__ = "0.1.0"
