"""The typer app, the consoles, the options several commands share, and `main`."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from advisor.errors import AdvisorError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Which channel counts does your hardware like? Sweep, model, prune, prove.")
out = Console(width=max(120, Console().width))  # tables of four networks stay unwrapped in a log
err = Console(stderr=True, soft_wrap=True)  # a line of a log stays one line

MODEL = typer.Option("resnet18-cifar", "--model", "-m",
                     help="Built-in name, path/file.py:factory (with --input), or a .pt2 program.")
INPUT = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224 (built-ins have a default).")
DB = typer.Option(Path("advisor.db"), "--db", help="Results database (SQLite).")
THREADS = typer.Option(None, "--threads", help="Threads for TVM and PyTorch (default: all).")
TUNING_DIR = typer.Option(Path("tuning_logs"), "--tuning-dir", help="Tuned-schedule cache.")


def progress():
    """What commands hand to domain code that reports progress."""
    from advisor.report.progress import ConsoleProgress

    return ConsoleProgress(err)


def require_file(path: Path) -> None:
    if not path.exists():
        raise AdvisorError(f"{path} does not exist: run `advisor sweep` first")


def _quiet_third_parties() -> None:
    """Warnings and log lines of TVM and PyTorch that say nothing to a user of advisor."""
    # MetaSchedule's worker processes inherit this: torch.export's FutureWarnings are noise there
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    for name in ("tvm", "torch", "torch_pruning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main() -> None:
    from advisor.report.progress import ConsoleHandler

    _quiet_third_parties()
    logger = logging.getLogger("advisor")
    logger.setLevel(logging.INFO)
    logger.addHandler(ConsoleHandler(err))
    logger.propagate = False
    try:
        app()
    except AdvisorError as error:
        err.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: every finished point is saved; run the same command to resume")
        sys.exit(130)
