"""docs/settings.md is generated from the settings declarations and kept up to date."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re

import pytest

from sluice.cli import COMMANDS, build_parser
from sluice.settings import env_name
from sluice.settings_doc import DOC_PATH, REGENERATE, render, settings_class


def test_settings_page_is_up_to_date() -> None:
    """Fails when a setting was added, removed or reworded without regenerating the page."""
    expected = render()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == expected, (
        f"{DOC_PATH.name} is out of date with the settings declarations. "
        f"Regenerate it with `{REGENERATE}` (from the repository root, in the project's "
        "virtualenv) and commit the result."
    )


def help_text(*argv: str) -> str:
    """What ``sluice ARGV --help`` prints (argparse exits after printing it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return out.getvalue()


def usage_flags(text: str) -> set[str]:
    """The long flags in a help text's usage lines, ``--no-`` halves left out."""
    usage = text.split("\n\n", 1)[0]
    return {flag for flag in re.findall(r"--[a-z][a-z0-9-]*", usage)
            if flag != "--help" and not flag.startswith("--no-")}


def sub_commands(text: str) -> list[str]:
    """The actions listed under ``ACTION`` in a command's help (``sluice deadletters``)."""
    section = text.split("\n  ACTION\n", 1)
    if len(section) == 1:
        return []
    return re.findall(r"^    ([a-z]+) ", section[1].split("\n\n", 1)[0], flags=re.MULTILINE)


def test_every_cli_flag_is_on_the_page() -> None:
    """The page describes what the CLI accepts, as its --help shows it: every flag of every
    command and of its actions, and no other."""
    page = render()
    for command, module_name in COMMANDS.items():
        text = help_text(command)
        flags = usage_flags(text)
        actions = sub_commands(text)
        for action in actions:
            flags |= usage_flags(help_text(command, action))
        assert flags, command
        section = page.split(f"## `sluice {command}`", 1)[1].split("\n## ", 1)[0]
        documented = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `--")}
        assert documented == flags, command
        for f in dataclasses.fields(settings_class(module_name)):
            assert f"`{env_name(f.name)}`" in section


def test_the_actions_of_a_command_are_found() -> None:
    # The check above reads actions from the help text; this keeps it from passing on none.
    assert sub_commands(help_text("deadletters")) == ["list", "show", "replay"]
    assert "--batch" in usage_flags(help_text("deadletters", "replay"))
