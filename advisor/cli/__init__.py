"""The `advisor` command line: the app and shared options in app.py, one module per command family;
each registers its commands on the app when imported (in the order `--help` lists them)."""

from advisor.cli import sweep, learn, recommend, board, pareto  # noqa: F401,I001
from advisor.cli.app import app, main  # noqa: F401
