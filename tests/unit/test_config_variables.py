"""Variables as in tfvars: precedence, types, references, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.config.variables import convert_text
from tests.unit.test_config_loader import ACCOUNT, error_of, load, write

CONFIG = """
variables:
  environment:
    type: string
  retention:
    type: number
    default: 35
  accounts:
    type: list
    default: []
  enabled:
    type: bool
    default: true
resources:
  files:
    type: directory
    settings: {{path: "{root}"}}
    tags:
      environment: ${{var.environment}}
      label: "env-${{var.environment}}-${{var.retention}}-${{var.enabled}}"
outputs:
  retention: {{value: "${{var.retention}}"}}
  accounts: {{value: "${{var.accounts}}"}}
  enabled: {{value: "${{var.enabled}}"}}
  literal: {{value: "$${{var.environment}}"}}
  account: {{value: "${{account.id}} in ${{account.region}}"}}
  default_vault: {{value: "${{vault.Default.arn}}"}}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write(tmp_path, CONFIG.format(root=tmp_path))


def values(loaded) -> dict:  # type: ignore[no-untyped-def]
    return {name: output["value"] for name, output in loaded.outputs.items()}


def test_defaults_then_files_in_order_then_cli(config: Path, tmp_path: Path) -> None:
    first = write(tmp_path, "environment: staging\nretention: 10\naccounts: ['111111111111']\n", "first.yaml")
    second = write(tmp_path, "retention: 20\n", "second.yaml")
    loaded = load(config, "environment=production", var_files=(first, second))
    assert values(loaded)["retention"] == 20  # the later file wins over the earlier one
    assert values(loaded)["accounts"] == ["111111111111"]
    assert loaded.config.resources["files"].tags["environment"] == "production"  # --var wins over files
    assert values(load(config, "environment=x"))["retention"] == 35  # the default when nothing else is given


def test_a_whole_reference_keeps_its_type_and_a_partial_one_becomes_text(config: Path) -> None:
    loaded = load(config, "environment=production", "retention=60", "enabled=false", "accounts=[a, b]")
    assert values(loaded)["retention"] == 60
    assert values(loaded)["enabled"] is False
    assert values(loaded)["accounts"] == ["a", "b"]
    assert loaded.config.resources["files"].tags["label"] == "env-production-60-false"


def test_literal_dollar_brace_and_account_references(config: Path) -> None:
    shown = values(load(config, "environment=x"))
    assert shown["literal"] == "${var.environment}"
    assert shown["account"] == f"{ACCOUNT.account_id} in {ACCOUNT.region}"
    assert shown["default_vault"] == f"arn:strongroom:backup:local:{ACCOUNT.account_id}:backup-vault:Default"


def test_unset_variable_without_default_names_its_declaration(config: Path) -> None:
    assert error_of(config) == (
        f"{config}:2: variables.environment: no value given for variable 'environment'. Pass"
        " --var NAME=VALUE, put it in a --var-file, or give the variable a default"
    )


def test_unknown_cli_variable(config: Path) -> None:
    assert (
        error_of(config, "environment=x", "colour=blue") == f"{config}:1: --var colour: no variable 'colour' is"
        " declared"
    )


def test_cli_value_of_the_wrong_type(config: Path) -> None:
    assert error_of(config, "environment=x", "retention=long") == (
        f"{config}:4: variables.retention: --var retention: expected a number, got 'long'"
    )
    assert "--var 'nonsense' is not NAME=VALUE" in error_of(config, "environment=x", "nonsense")


def test_var_file_problems_name_the_var_file(config: Path, tmp_path: Path) -> None:
    var_file = write(tmp_path, "environment: x\ncolour: blue\nretention: [1]\n", "vars.yaml")
    message = error_of(config, var_files=(var_file,))
    assert f"{var_file}:2: colour: no variable 'colour' is declared in {config}" in message
    assert f"{var_file}:3: retention: expected a number, got [1]" in message


def test_reference_to_an_undeclared_variable(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "outputs:\n  a:\n    value: ${var.nope}\n  b:\n    value: ${vault.ghost.arn}\n  c:\n    value: ${nonsense}\n",
    )
    message = error_of(path)
    assert f"{path}:3: outputs.a.value: ${{var.nope}}: variable 'nope' is not declared under variables" in message
    assert f"{path}:5: outputs.b.value: ${{vault.ghost.arn}}: no vault 'ghost' is declared" in message
    assert f"{path}:7: outputs.c.value: unknown reference ${{nonsense}}" in message


def test_a_list_cannot_be_part_of_a_longer_string(tmp_path: Path) -> None:
    path = write(tmp_path, "variables:\n  l: {type: list, default: [1]}\noutputs:\n  a: {value: 'x-${var.l}'}\n")
    assert error_of(path) == f"{path}:4: outputs.a.value: ${{var.l}} is a list and cannot be part of a longer string"


def test_a_default_of_the_wrong_type(tmp_path: Path) -> None:
    path = write(tmp_path, "variables:\n  n:\n    type: number\n    default: many\n")
    assert error_of(path) == f"{path}:4: variables.n.default: expected a number, got 'many'"


def test_a_number_given_for_a_string_becomes_text(tmp_path: Path) -> None:
    path = write(tmp_path, "variables:\n  id: {type: string}\noutputs:\n  id: {value: '${var.id}'}\n")
    var_file = write(tmp_path, "id: 222222222222\n", "vars.yaml")
    assert load(path, var_files=(var_file,)).outputs["id"]["value"] == "222222222222"


def test_variable_declaration_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "variables:\n  x:\n    type: text\n")
    assert error_of(path).startswith(
        f"{path}:3: variables.x.type: Input should be 'string', 'number', 'bool', 'list' or 'map'"
    )


def test_sensitive_values_are_remembered_for_masking(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "variables:\n  token: {type: string, sensitive: true}\noutputs:\n"
        "  url: {value: 'https://hooks.example/${var.token}'}\n",
    )
    assert load(path, "token=s3cr3t-value").sensitive_values == frozenset({"s3cr3t-value"})


@pytest.mark.parametrize(
    ("type_name", "text", "expected"),
    [
        ("string", "007", "007"),
        ("number", "7", 7),
        ("number", "2.5", 2.5),
        ("bool", "TRUE", True),
        ("list", "[a, 1]", ["a", 1]),
        ("map", "{k: v}", {"k": "v"}),
    ],
)
def test_command_line_text_is_read_as_the_declared_type(type_name: str, text: str, expected: object) -> None:
    assert convert_text(type_name, text) == expected
