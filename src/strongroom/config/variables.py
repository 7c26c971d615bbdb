"""Variables as in Terraform's tfvars: declared in the config, given by --var and --var-file, used as ${var.NAME}.

Precedence, lowest first: the declaration's ``default``, each ``--var-file`` in the order given,
each ``--var NAME=VALUE``. A value given on the command line is text and is read as the declared
type (``number``, ``bool``; ``list`` and ``map`` as YAML flow, e.g. ``[a, b]``).

References, resolved at plan/apply time: ``${var.NAME}``, ``${account.id}``, ``${account.region}``,
``${vault.NAME.arn}``. A string that is exactly one reference takes the referenced value with its
type; inside a longer string the value is written as text. ``$${`` writes a literal ``${``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from strongroom.config.schema import VariableConfig
from strongroom.config.source import Path_, SourceMap, read_yaml

REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
WHOLE_REFERENCE = re.compile(r"^\$\{([^}]*)\}$")
REFERENCE_FORMS = "${var.NAME}, ${account.id}, ${account.region} or ${vault.NAME.arn}"
SET_HINT = "Pass --var NAME=VALUE, put it in a --var-file, or give the variable a default"


@dataclass(frozen=True)
class AccountIdentity:
    """What ${account.*} and ${vault.*} refer to: the account a plan is made for."""

    account_id: str
    region: str
    vault_names: frozenset[str] = frozenset()  # vaults that exist already (e.g. Default)

    def vault_arn(self, name: str) -> str:
        return f"arn:strongroom:backup:{self.region}:{self.account_id}:backup-vault:{name}"


@dataclass
class VariableValues:
    values: dict[str, Any] = field(default_factory=dict)
    declared: set[str] = field(default_factory=set)
    sensitive: set[str] = field(default_factory=set)  # names of sensitive variables


class ValueTypeError(ValueError):
    """A variable's value does not have its declared type (turned into a ConfigError with file and line)."""


def parse_assignment(pair: str) -> tuple[str, str]:
    name, sep, value = pair.partition("=")
    if not sep or not name.strip():
        raise ValueTypeError(f"--var '{pair}' is not NAME=VALUE")
    return name.strip(), value


def resolve_variables(
    declared: dict[str, VariableConfig],
    source: SourceMap,
    cli_vars: list[str],
    var_files: list[Path],
    problems: list[str],
) -> VariableValues:
    """Each declared variable's value by precedence; problems are appended as located one-liners."""
    given: dict[str, Any] = {}
    for var_file in var_files:
        given.update(_read_var_file(var_file, declared, source, problems))
    given.update(_read_cli_vars(cli_vars, declared, source, problems))
    sensitive = {name for name, spec in declared.items() if spec.sensitive}
    result = VariableValues(declared=set(declared), sensitive=sensitive)
    for name, spec in declared.items():
        path: Path_ = ("variables", name)
        if name in given:
            result.values[name] = given[name]
        elif spec.has_default:
            _set_converted(result.values, name, spec, spec.default, source, (*path, "default"), problems)
        else:
            problems.append(source.problem(path, f"no value given for variable '{name}'. {SET_HINT}"))
    return result


def _read_var_file(
    path: Path, declared: dict[str, VariableConfig], source: SourceMap, problems: list[str]
) -> dict[str, Any]:
    data, var_source = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{var_source.file}:1: a var file is a mapping of NAME: VALUE")
        return {}
    values: dict[str, Any] = {}
    for name, raw in data.items():
        if str(name) not in declared:
            problems.append(var_source.problem((str(name),), f"no variable '{name}' is declared in {source.file}"))
            continue
        _set_converted(values, str(name), declared[str(name)], raw, var_source, (str(name),), problems)
    return values


def _read_cli_vars(
    pairs: list[str], declared: dict[str, VariableConfig], source: SourceMap, problems: list[str]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for pair in pairs:
        try:
            name, text = parse_assignment(pair)
        except ValueTypeError as exc:
            problems.append(f"{source.where(('variables',))}: {exc}")
            continue
        spec = declared.get(name)
        if spec is None:
            problems.append(f"{source.where(('variables',))}: --var {name}: no variable '{name}' is declared")
            continue
        try:
            values[name] = convert_text(spec.type, text)
        except ValueTypeError as exc:
            problems.append(source.problem(("variables", name), f"--var {name}: {exc}"))
    return values


def _set_converted(
    target: dict[str, Any],
    name: str,
    spec: VariableConfig,
    raw: Any,
    source: SourceMap,
    path: Path_,
    problems: list[str],
) -> None:
    try:
        target[name] = convert_value(spec.type, raw)
    except ValueTypeError as exc:
        problems.append(source.problem(path, str(exc)))


def convert_text(type_name: str, text: str) -> Any:
    """A command-line value read as the declared type."""
    if type_name == "string":
        return text
    if type_name in ("list", "map"):
        try:
            return convert_value(type_name, yaml.safe_load(text))
        except yaml.YAMLError:
            raise ValueTypeError(f"'{text}' is not a {type_name} (use YAML flow style: [a, b] or {{k: v}})") from None
    if type_name == "bool" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return convert_value(type_name, text)


def convert_value(type_name: str, value: Any) -> Any:
    """A value from YAML checked against (and converted to) the declared type."""
    if type_name == "string":
        return _as_string(value)
    if type_name == "number":
        return _as_number(value)
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value in ("true", "false"):
            return value == "true"
        raise ValueTypeError(f"expected true or false, got {value!r}")
    expected = list if type_name == "list" else dict
    if not isinstance(value, expected):
        raise ValueTypeError(f"expected a {type_name}, got {value!r}")
    return value


def _as_string(value: Any) -> str:
    if isinstance(value, bool):
        raise ValueTypeError(f'expected a string, got the boolean {value} (quote it: "{value}")')
    if isinstance(value, int | float):
        return str(value)
    if not isinstance(value, str):
        raise ValueTypeError(f"expected a string, got {value!r}")
    return value


def _as_number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value)
            except ValueError:
                continue
    raise ValueTypeError(f"expected a number, got {value!r}")


class Interpolator:
    """Replaces ${...} references in every string of a data tree, reporting problems with their line."""

    def __init__(
        self, variables: VariableValues, identity: AccountIdentity, vault_names: set[str], source: SourceMap
    ) -> None:
        self.variables = variables
        self.identity = identity
        self.vault_names = vault_names | set(identity.vault_names)
        self.source = source
        self.problems: list[str] = []
        self.sensitive_values: set[str] = set()

    def resolve(self, data: Any, path: Path_) -> Any:
        if isinstance(data, dict):
            return {key: self.resolve(value, (*path, str(key))) for key, value in data.items()}
        if isinstance(data, list):
            return [self.resolve(item, (*path, index)) for index, item in enumerate(data)]
        if isinstance(data, str):
            return self._string(data, path)
        return data

    def _string(self, text: str, path: Path_) -> Any:
        whole = WHOLE_REFERENCE.match(text)
        if whole:
            return self._lookup(whole[1], path)
        return REFERENCE.sub(lambda match: self._piece(match, path), text)

    def _piece(self, match: re.Match[str], path: Path_) -> str:
        if match[0] == "$${":
            return "${"
        value = self._lookup(match[1], path)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | dict):
            self.problems.append(
                self.source.problem(
                    path, f"${{{match[1].strip()}}} is a {type(value).__name__} and cannot be part of a longer string"
                )
            )
            return ""
        return "" if value is None else str(value)

    def _lookup(self, expression: str, path: Path_) -> Any:
        parts = expression.strip().split(".")
        if parts[0] == "var" and len(parts) == 2:
            return self._variable(parts[1], path)
        if parts[0] == "account" and len(parts) == 2 and parts[1] in ("id", "region"):
            return self.identity.account_id if parts[1] == "id" else self.identity.region
        if parts[0] == "vault" and len(parts) == 3 and parts[2] == "arn":
            if parts[1] not in self.vault_names:
                self.problems.append(
                    self.source.problem(
                        path,
                        f"${{{expression.strip()}}}: no vault '{parts[1]}'"
                        " is declared under vaults or exists in the account",
                    )
                )
            return self.identity.vault_arn(parts[1])
        self.problems.append(self.source.problem(path, f"unknown reference ${{{expression}}}; use {REFERENCE_FORMS}"))
        return None

    def _variable(self, name: str, path: Path_) -> Any:
        if name not in self.variables.values:
            if name not in self.variables.declared:
                self.problems.append(
                    self.source.problem(path, f"${{var.{name}}}: variable '{name}' is not declared under variables")
                )
            return None  # declared but unset: already reported once by resolve_variables
        value = self.variables.values[name]
        if name in self.variables.sensitive:
            self._remember_sensitive(value)
        return value

    def _remember_sensitive(self, value: Any) -> None:
        if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value):
            self.sensitive_values.add(str(value))
        elif isinstance(value, list | dict):
            for item in value.values() if isinstance(value, dict) else value:
                self._remember_sensitive(item)
