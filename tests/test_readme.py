"""The README is a user's guide: short, and it names every option of every command."""

import re

import typer.main

from advisor.cli import app
from conftest import REPO

README = (REPO / "README.md").read_text()


def _sections() -> dict[str, str]:
    """Command reference sections by the commands their heading names."""
    sections = {}
    parts = re.split(r"^### ", README, flags=re.M)
    for part in parts[1:]:
        heading, _, _ = part.partition("\n")
        for name in re.findall(r"`advisor (\w+)", heading):
            sections[name] = part
    return sections


def test_readme_is_short():
    assert len(README.splitlines()) < 300


def test_every_option_of_every_command_is_in_its_section():
    sections = _sections()
    missing = []
    for name, command in typer.main.get_command(app).commands.items():
        section = sections.get(name)
        if section is None:
            missing.append(f"no section for `advisor {name}`")
            continue
        shared = README.split("## Commands", 1)[1].split("###", 1)[0]
        for parameter in command.params:
            long = [o for o in parameter.opts + list(parameter.secondary_opts) if o.startswith("--")]
            for option in long:
                if option not in section and not (option in shared and "as above" in section):
                    missing.append(f"advisor {name} {option}")
    assert not missing, "README lacks: " + ", ".join(missing)
