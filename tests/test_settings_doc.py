"""docs/settings.md is generated from the settings declarations and kept up to date."""

from __future__ import annotations

import dataclasses

from sluice.cli import COMMANDS, build_parser
from sluice.settings import env_name
from sluice.settings_doc import DOC_PATH, REGENERATE, cli_flags, render, settings_class


def test_settings_page_is_up_to_date() -> None:
    """Fails when a setting was added, removed or reworded without regenerating the page."""
    expected = render()
    current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    assert current == expected, (
        f"{DOC_PATH.name} is out of date with the settings declarations. "
        f"Regenerate it with `{REGENERATE}` (from the repository root, in the project's "
        "virtualenv) and commit the result."
    )


def test_every_cli_flag_is_on_the_page() -> None:
    """The page describes what the CLI accepts: every flag of every subcommand, and no other."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    page = render()
    for command, module_name in COMMANDS.items():
        sub = subparsers.choices[command]  # type: ignore[attr-defined]
        flags = {next(o for o in a.option_strings if o.startswith("--")) for _, a in cli_flags(sub)}
        section = page.split(f"## `sluice {command}`", 1)[1].split("\n## ", 1)[0]
        documented = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `--")}
        assert documented == flags, command
        for f in dataclasses.fields(settings_class(module_name)):
            assert f"`{env_name(f.name)}`" in section
