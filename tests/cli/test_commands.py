"""Every stage command has the same shape: its flags named one by one into the stage's options,
and one printer, `print_result(result, console)`, that `nash run` can find by name."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import pytest

from nash_cli.stages import all_stages

CLI = Path(__file__).resolve().parents[2] / "nash_cli" / "cli"

#: The stage command modules (`nash_cli.cli.<module>`), each with a `nash_cli.stages.<module>`: one per
#: declared stage's module.
STAGES = sorted({stage.run.__module__.split(".")[2] for stage in all_stages()})

#: Options fields no command sets, on purpose (the library's callers may).
NOT_FLAGS = {"show_progress"}


def _options_call(module: str) -> ast.Call:
    """The `Options(...)` call in the module's `command`."""
    tree = ast.parse((CLI / f"{module}.py").read_text())
    command = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "command")
    calls = [
        node for node in ast.walk(command)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Options"
    ]
    assert len(calls) == 1, f"{module}.command builds its options once"
    return calls[0]


def _keywords(call: ast.Call) -> dict[str, ast.expr]:
    """The call's keyword arguments, those inside a `**{...}` (eval's optional --metric) included."""
    named: dict[str, ast.expr] = {}
    for keyword in call.keywords:
        if keyword.arg is not None:
            named[keyword.arg] = keyword.value
            continue
        dicts = [node for node in ast.walk(keyword.value) if isinstance(node, ast.Dict)]
        for mapping in dicts:
            for key, value in zip(mapping.keys, mapping.values):
                if isinstance(key, ast.Constant):
                    named[key.value] = value
    return named


@pytest.mark.parametrize("module", STAGES)
def test_each_flag_is_named_into_its_options_field(module):
    cli = importlib.import_module(f"nash_cli.cli.{module}")
    command, options_class = cli.command, cli.Options
    flags = [name for name in inspect.signature(command).parameters if name != "json_output"]
    fields = {field.name for field in dataclasses.fields(options_class)} - NOT_FLAGS

    passed = _keywords(_options_call(module))
    assert sorted(passed) == sorted(flags), "every flag, and nothing else, is passed by name"
    assert set(flags) == fields, "every options field has a flag"
    for name, value in passed.items():
        # `x=x`, or a conversion of x (`layer_list(x, ...)`, `list(x)`): never another flag's value
        used = {node.id for node in ast.walk(value) if isinstance(node, ast.Name)} & set(flags)
        assert used == {name}, f"{module}: {name}= takes {sorted(used)}"


@pytest.mark.parametrize("module", STAGES)
def test_each_stage_command_prints_with_print_result(module):
    printer = importlib.import_module(f"nash_cli.cli.{module}").print_result
    assert list(inspect.signature(printer).parameters) == ["result", "console"]
    assert printer.__doc__


def test_no_command_hands_its_locals_or_a_module_name_on():
    for module in STAGES:
        text = (CLI / f"{module}.py").read_text()
        assert "locals()" not in text and "import_module" not in text, module
    assert all("locals()" not in path.read_text() for path in CLI.glob("*.py"))
