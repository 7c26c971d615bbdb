"""Disaster-recovery runbooks: YAML files of typed steps (docs/disaster-recovery.md).

A runbook is read like an account configuration (every problem named with its file and line):
``variables`` as in the config (``--var``, ``--var-file``, defaults), resolved when the file is
read, and ``steps``, each a mapping with a ``name``, a ``type`` and that type's fields. Two kinds of
reference stay in the text and are resolved only when their step runs:

- ``${steps.NAME.FIELD}``: an output of an earlier step (e.g. ``${steps.restore.port}``);
- ``${run.id}``, ``${run.rehearsal}``; and ``${secret.NAME.FIELD}`` (only in ``run``/``restart_app``
  ``env`` and ``http`` ``headers``/``url``), read from the secret store at that moment and never stored;
  the name may hold variables (``${secret.${var.APP}/db}``), resolved when the file is read.

``when: {VARIABLE: VALUE, ...}`` runs a step only when every variable has that value (the seed's two
credential modes are two steps, one of them skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, TypeAdapter, ValidationError

from strongroom.config.loader import validation_problems, variables
from strongroom.config.schema import Strict
from strongroom.config.source import Path_, SourceMap, raise_problems, read_yaml
from strongroom.config.variables import REFERENCE, AccountIdentity, Interpolator, VariableValues

STEP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
IDENTIFIER = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
RUNTIME_ROOTS = ("steps", "run", "secret")
SECRET_START = "${secret."


def _pattern(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"'{value}' is not a valid {what}")
        return value

    return AfterValidator(check)


def _empty_is_none(value: Any) -> Any:
    return None if value == "" else value


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("give a time zone, e.g. 2026-11-25T09:30:00Z")
    return value


StepName = Annotated[str, _pattern(STEP_NAME, "step name (lowercase letters, digits, '-' and '_')")]
Identifier = Annotated[str, _pattern(IDENTIFIER, "identifier (lowercase letters, digits, '-' and '_', at most 63)")]
Command = list[str] | str
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\*?")
# Names (or PREFIX*) of Strongroom's own environment variables a hook receives as they are.
PassEnv = list[Annotated[str, _pattern(ENV_NAME, "environment variable name (NAME or PREFIX*)")]]
Timeout = Annotated[int, Field(ge=1, le=7 * 86400)]


class StepBase(Strict):
    name: StepName
    description: str = ""
    when: dict[str, Any] = Field(default_factory=dict)


class SelectRecoveryPointStep(StepBase):
    type: Literal["select_recovery_point"]
    resource: str
    vault: str = "Default"
    account: str | None = None  # a remote account ('accounts add'); none: this account
    recovery_point: str = "latest"  # 'latest' or an ARN
    at_or_before: Annotated[datetime | None, BeforeValidator(_empty_is_none), AfterValidator(_aware)] = None


class RestoreStep(StepBase):
    type: Literal["restore"]
    target_identifier: Identifier
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    target: str | None = None  # postgres-cluster: the data directory; postgres: the server's DSN
    copy_back_vault: str = "Default"  # where a point selected in another account is copied first
    jobs: Annotated[int, Field(ge=1, le=64)] | None = None
    recovery_point: str | None = None  # default: the previous select_recovery_point step's
    no_owners: bool = False  # postgres: as restore start --no-owners
    no_privileges: bool = False  # postgres: as restore start --no-privileges
    create_roles: bool = False  # postgres: as restore start --create-roles
    role_map: dict[str, str] = Field(default_factory=dict)  # postgres: as restore start --role-map OLD=NEW
    encoding: str | None = None  # postgres: as restore start --encoding
    locale: str | None = None  # postgres: as restore start --locale
    # postgres-cluster: keep the backup's *_command, preload and include settings (runs its code as postgres)
    trust_restored_config: bool = False


class WaitHealthyStep(StepBase):
    type: Literal["wait_healthy"]
    timeout_seconds: Timeout = 300
    interval_seconds: Annotated[float, Field(gt=0, le=60)] = 1.0


class UpdateSecretStep(StepBase):
    type: Literal["update_secret"]
    secret: str
    values: dict[str, Any] | None = None  # default: host and port (and dbname) of the restored target


class RotateCredentialsStep(StepBase):
    type: Literal["rotate_credentials"]
    secret: str
    username: str | None = None  # default: the secret's username
    dbname: str | None = None  # default: the secret's dbname, else postgres
    password_length: Annotated[int, Field(ge=16, le=128)] = 32


class AdoptResourceStep(StepBase):
    type: Literal["adopt_resource"]
    resource_id: str | None = None  # default: the restored identifier
    original: str | None = None  # default: the resource the selected recovery point was taken of
    adopt_as: Literal["new_resource", "original_resource"] = "new_resource"
    original_action: Literal["untag", "keep"] = "untag"
    tags: dict[str, str] = Field(default_factory=dict)
    require_plan: bool = True
    backup_now: bool = False


class RunStep(StepBase):
    type: Literal["run"]
    command: Command
    env: dict[str, str] = Field(default_factory=dict)
    pass_env: PassEnv = Field(default_factory=list)
    cwd: str | None = None
    timeout_seconds: Timeout = 3600
    rehearse: bool = False


class HttpStep(StepBase):
    type: Literal["http"]
    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    body: Any = None  # sent as JSON
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: list[int] = Field(default_factory=list)  # empty: any 2xx
    timeout_seconds: Timeout = 30
    rehearse: bool = False


class RestartAppStep(StepBase):
    type: Literal["restart_app"]
    command: Command | None = None
    env: dict[str, str] = Field(default_factory=dict)
    pass_env: PassEnv = Field(default_factory=list)
    health_url: str | None = None
    timeout_seconds: Timeout = 120
    rehearse: bool = False


class SqlCheck(Strict):
    sql: str
    expect: Any


class VerifySqlStep(StepBase):
    type: Literal["verify_sql"]
    secret: str | None = None  # connect as the app does, with this secret; default: the restore's login
    database: str | None = None
    checks: Annotated[list[SqlCheck], Field(min_length=1)]


StepModel = (
    SelectRecoveryPointStep
    | RestoreStep
    | WaitHealthyStep
    | UpdateSecretStep
    | RotateCredentialsStep
    | AdoptResourceStep
    | RunStep
    | HttpStep
    | RestartAppStep
    | VerifySqlStep
)
Step = Annotated[StepModel, Field(discriminator="type")]
STEP_TYPES = (
    "select_recovery_point",
    "restore",
    "wait_healthy",
    "update_secret",
    "rotate_credentials",
    "adopt_resource",
    "run",
    "http",
    "restart_app",
    "verify_sql",
)


class RunbookConfig(Strict):
    runbook: Identifier
    description: str = ""
    variables: dict[str, Any] = Field(default_factory=dict)
    steps: Annotated[list[Step], Field(min_length=1)]


@dataclass(frozen=True)
class RunbookStep:
    """One step of a loaded runbook: its typed fields (variables resolved) and whether its ``when`` holds."""

    fields: StepModel
    enabled: bool

    @property
    def name(self) -> str:
        return self.fields.name

    @property
    def type(self) -> str:
        return self.fields.type

    def as_dict(self) -> dict[str, Any]:
        """As a run stores it in the catalog: the fields, ``enabled``, then ``when``."""
        return {
            **self.fields.model_dump(mode="json", exclude={"when"}),
            "enabled": self.enabled,
            "when": self.fields.when,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> RunbookStep:
        fields = {key: value for key, value in data.items() if key != "enabled"}
        return cls(_STEP.validate_python(fields), bool(data.get("enabled", True)))


@dataclass(frozen=True)
class Runbook:
    name: str
    description: str
    file: str
    steps: list[RunbookStep]
    variables: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "file": self.file,
            "steps": [step.as_dict() for step in self.steps],
            "variables": self.variables,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Runbook:
        return cls(
            data["name"],
            data.get("description", ""),
            data.get("file", ""),
            [RunbookStep.of(step) for step in data["steps"]],
            data.get("variables") or {},
        )


_STEP: TypeAdapter[StepModel] = TypeAdapter(Step)


def load_runbook(path: Path, *, identity: AccountIdentity, cli_vars: list[str], var_files: list[Path]) -> Runbook:
    """Read, resolve and validate a runbook; ConfigError naming file:line on any problem."""
    data, source = read_yaml(path)
    if not isinstance(data, dict):
        raise_problems([f"{source.file}:1: a runbook is a mapping with keys runbook, variables and steps"])
    values = variables(data, source, cli_vars, var_files)
    problems = [
        source.problem(
            ("variables", name),
            "runbooks have no sensitive variables; read secrets with ${secret.NAME.FIELD} where a step allows it",
        )
        for name in values.sensitive
    ]
    raw_steps = data.get("steps") if isinstance(data.get("steps"), list) else []
    interpolator = _RunbookInterpolator(values, identity, source, _step_names(raw_steps))
    resolved = {key: interpolator.resolve(value, (str(key),)) for key, value in data.items() if key != "variables"}
    raise_problems(problems + interpolator.problems)
    try:
        config = RunbookConfig.model_validate({**resolved, "variables": data.get("variables") or {}})
    except ValidationError as exc:
        raise_problems(_step_problems(exc, source))
        raise
    steps = [
        RunbookStep(step, _enabled(step, values, source, index, problems)) for index, step in enumerate(config.steps)
    ]
    _check_names(config, source, problems)
    raise_problems(problems)
    return Runbook(config.runbook, config.description, source.file, steps, dict(values.values))


def _step_names(raw_steps: list[Any]) -> list[str]:
    return [str(step.get("name")) if isinstance(step, dict) else "" for step in raw_steps]


def _step_problems(exc: ValidationError, source: SourceMap) -> list[str]:
    """Pydantic's locations name the union member (``steps.2.restore.port``); drop it."""
    problems = []
    for error in exc.errors(include_url=False):
        location = list(error["loc"])
        if len(location) >= 3 and location[0] == "steps" and location[2] in STEP_TYPES:
            del location[2]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            location.append("type")
            tag = (error.get("ctx") or {}).get("tag", "")
            message = f"unknown step type '{tag}'; use one of {', '.join(STEP_TYPES)}"
        elif error["type"] == "union_tag_not_found":
            message = f"a step needs a type: one of {', '.join(STEP_TYPES)}"
        problems.append(source.problem(tuple(location), message))
    return problems or validation_problems(exc, source)


def _enabled(step: StepModel, values: VariableValues, source: SourceMap, index: int, problems: list[str]) -> bool:
    """Whether every ``when`` variable has its value (undeclared ones are problems)."""
    enabled = True
    for name, expected in step.when.items():
        if name not in values.declared:
            problems.append(source.problem(("steps", index, "when", name), f"variable '{name}' is not declared"))
        elif values.values.get(name) != expected:
            enabled = False
    return enabled


def _check_names(config: RunbookConfig, source: SourceMap, problems: list[str]) -> None:
    seen: set[str] = set()
    for index, step in enumerate(config.steps):
        if step.name in seen:
            problems.append(source.problem(("steps", index, "name"), f"another step is already named '{step.name}'"))
        seen.add(step.name)


def _secret_allowed(path: Path_) -> bool:
    return any(part in ("env", "headers", "url") for part in path[2:3])


def _closing_brace(text: str, index: int) -> int:
    """Where the ``${`` just before ``index`` closes (nested ``${...}`` counted), or -1."""
    depth = 1
    while index < len(text):
        if text.startswith("${", index):
            depth, index = depth + 1, index + 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return -1


class _RunbookInterpolator(Interpolator):
    """Resolves ${var.*} and ${account.*} now; keeps ${steps.*}, ${run.*}, ${secret.*} for run time."""

    def __init__(self, values: VariableValues, identity: AccountIdentity, source: SourceMap, names: list[str]):
        super().__init__(values, identity, set(), source)
        self.names = names

    def _string(self, text: str, path: Path_) -> Any:
        return super()._string(self._inside_secrets(text, path) if SECRET_START in text else text, path)

    def _inside_secrets(self, text: str, path: Path_) -> str:
        """``${secret.${var.APP}/db}``: references inside a secret's name are resolved now, the secret later."""
        pieces, position = [], 0
        while (start := text.find(SECRET_START, position)) >= 0:
            end = _closing_brace(text, start + 2)
            if end < 0:
                break
            name = REFERENCE.sub(lambda match: self._piece(match, path), text[start + 2 : end])
            pieces.append(text[position:start] + "${" + name + "}")
            position = end + 1
        return "".join(pieces) + text[position:]

    def _lookup(self, expression: str, path: Path_) -> Any:
        parts = expression.strip().split(".")
        if parts[0] not in RUNTIME_ROOTS:
            return super()._lookup(expression, path)
        if parts[0] == "steps":
            self._check_step_reference(parts, path)
        elif parts[0] == "run" and (len(parts) != 2 or parts[1] not in ("id", "rehearsal")):
            self.problems.append(
                self.source.problem(path, f"unknown reference ${{{expression}}}; use ${{run.id}} or ${{run.rehearsal}}")
            )
        elif parts[0] == "secret" and (len(parts) < 2 or not _secret_allowed(path)):
            self.problems.append(
                self.source.problem(
                    path,
                    f"${{{expression}}}: use ${{secret.NAME}} or ${{secret.NAME.FIELD}}, only in env, headers and url",
                )
            )
        return "${" + expression.strip() + "}"

    def _check_step_reference(self, parts: list[str], path: Path_) -> None:
        position = path[1] if len(path) > 1 and path[0] == "steps" and isinstance(path[1], int) else len(self.names)
        earlier = self.names[:position]
        if len(parts) != 3 or parts[1] not in earlier:
            self.problems.append(
                self.source.problem(
                    path,
                    f"${{{'.'.join(parts)}}}: use ${{steps.NAME.FIELD}} with the name of an earlier step"
                    f" ({', '.join(earlier) or 'there is none'})",
                )
            )
