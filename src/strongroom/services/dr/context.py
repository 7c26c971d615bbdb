"""What a step handler sees: its resolved fields, earlier steps' outputs, its own checkpoint."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from strongroom.config.runbook import StepBase
from strongroom.errors import ConfigError, NotFoundError
from strongroom.services.account import Account
from strongroom.services.secrets import field_of, get_secret

REFERENCE = re.compile(r"\$\{([^}]*)\}")
WHOLE = re.compile(r"^\$\{([^}]*)\}$")
UNKNOWN = "<unknown until it runs>"
S = TypeVar("S", bound=StepBase)
SECRET_WRITERS = ("update_secret", "rotate_credentials")  # step types whose outputs name a secret they wrote


@dataclass
class StepContext(Generic[S]):
    account: Account
    run_id: str
    rehearsal: bool
    step: S  # this step's fields (config/runbook.py's model), ${steps.*} and ${run.*} resolved
    earlier: list[dict[str, Any]]  # earlier steps: name, type, state, outputs
    checkpoint: dict[str, Any] = field(default_factory=dict)
    save_checkpoint: Callable[[dict[str, Any]], None] = lambda _: None
    changes: list[str] = field(default_factory=list)  # what this step changed, for the report
    dry_run: bool = False
    incident_time: datetime | None = None  # a selected point must be at or before it (RPO >= 0)

    def previous(self, step_type: str) -> dict[str, Any] | None:
        """Outputs of the latest earlier step of ``step_type`` that ran (None: there is none)."""
        for record in reversed(self.earlier):
            if record["type"] == step_type and record.get("outputs") is not None:
                return dict(record["outputs"])
        return None

    def required(self, step_type: str) -> dict[str, Any]:
        found = self.previous(step_type)
        if found is None:
            raise ConfigError(
                f"step '{self.step.name}' ({_type(self.step)}) needs an earlier {step_type} step",
                hint=f"add a {step_type} step before it in the runbook",
            )
        return found

    def checkpoint_set(self, **values: Any) -> None:
        """Persist progress inside this step before acting on it, so a resumed step knows where it was
        (and the report keeps what an interrupted attempt already changed)."""
        self.checkpoint.update(values, changes=list(self.changes))
        self.save_checkpoint(dict(self.checkpoint))

    def secret_known(self, name: str) -> bool:
        """Whether secret ``name`` will exist when this step runs: in the store now, or written by an earlier
        step (a dry run predicts that step's outputs: ``{"secret": NAME}``)."""
        if self.account.catalog.get_secret_row(name):
            return True
        return any(
            record["type"] in SECRET_WRITERS and (record.get("outputs") or {}).get("secret") == name
            for record in self.earlier
        )

    def expected_secret(self, name: str) -> dict[str, Any]:
        """For a dry run: the database fields (username, dbname) secret ``name`` will hold when this step runs:
        what an earlier step is predicted to write over what the store holds now."""
        try:
            stored = get_secret(self.account, name)
        except NotFoundError:
            stored = None
        fields = {k: v for k, v in (stored if isinstance(stored, dict) else {}).items() if k in ("username", "dbname")}
        for record in self.earlier:
            outputs = record.get("outputs") or {}
            if record["type"] in SECRET_WRITERS and outputs.get("secret") == name:
                fields.update({k: outputs[k] for k in ("username", "dbname") if outputs.get(k)})
        return fields

    def target_problems(self, username: str | None, dbname: str | None) -> list[str]:
        """For a dry run: a role or database a later step uses that will not exist on the restored target."""
        restored = self.previous("restore") or {}
        where = restored.get("identifier", "the restored target")
        problems = []
        roles, databases = restored.get("known_roles"), restored.get("known_databases")
        if username and isinstance(roles, list) and username not in roles:
            problems.append(
                f"role {username} will not exist on {where}: create it there first, or name the role the app logs in"
                " with"
            )
        if dbname and isinstance(databases, list) and dbname not in databases:
            made = f" (the restore creates {restored['database']})" if restored.get("database") else ""
            problems.append(f"database {dbname} will not exist on {where}{made}: name one that will")
        return problems

    def missing_secrets(self, value: Any) -> list[str]:
        """Dry-run problems: ``${secret.*}`` references in ``value`` to secrets that will not exist."""
        return [f"secret '{name}' does not exist" for name in secret_names(value) if not self.secret_known(name)]

    def scratch_name(self, name: str) -> str:
        """In a rehearsal, the throwaway twin of a name (an identifier, a secret, a resource id)."""
        return f"{name}-rehearsal-{self.run_id[:8]}" if self.rehearsal else name


def _type(step: StepBase) -> str:
    return str(getattr(step, "type", ""))


def first_line(exc: BaseException) -> str:
    """An exception's message for a one-line error: its first line, or its type when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class StepHandler(Protocol):
    def run(self, ctx: StepContext[Any]) -> dict[str, Any]:
        """Do the step; return its outputs (JSON, no secrets). Re-run after a crash: must converge."""

    def describe(self, ctx: StepContext[Any]) -> tuple[str, dict[str, Any], list[str]]:
        """For a dry run: what it would do (a sentence), the outputs it predicts, problems it sees now."""

    def clean_up(self, ctx: StepContext[Any], outputs: dict[str, Any]) -> list[str]:
        """After a rehearsal: remove what the step made; return what was removed."""


def resolve_runtime(value: Any, outputs: dict[str, dict[str, Any]], run: dict[str, Any]) -> Any:
    """Substitute ${steps.NAME.FIELD} and ${run.*}; ${secret.*} stays for the step to read at use.
    A step model comes back as a copy with its fields substituted (not validated again: an output may
    be a number where the runbook held text, as the step expects)."""
    if isinstance(value, BaseModel):
        fields = {name: resolve_runtime(getattr(value, name), outputs, run) for name in type(value).model_fields}
        return value.model_copy(update=fields)
    if isinstance(value, dict):
        return {key: resolve_runtime(item, outputs, run) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_runtime(item, outputs, run) for item in value]
    if not isinstance(value, str):
        return value
    whole = WHOLE.match(value)
    if whole and _root(whole[1]) in ("steps", "run"):
        return _lookup(whole[1], outputs, run)
    return REFERENCE.sub(lambda match: _text(match, outputs, run), value)


def _root(expression: str) -> str:
    return expression.strip().split(".")[0]


def _text(match: re.Match[str], outputs: dict[str, dict[str, Any]], run: dict[str, Any]) -> str:
    if _root(match[1]) not in ("steps", "run"):
        return match[0]
    found = _lookup(match[1], outputs, run)
    if isinstance(found, bool):
        return "true" if found else "false"
    return "" if found is None else str(found)


def _lookup(expression: str, outputs: dict[str, dict[str, Any]], run: dict[str, Any]) -> Any:
    parts = expression.strip().split(".")
    if parts[0] == "run":
        return run.get(parts[1])
    name, key = parts[1], parts[2]
    if name not in outputs:
        return UNKNOWN if run.get("dry_run") else None
    if key not in outputs[name]:
        if run.get("dry_run"):
            return UNKNOWN
        raise ConfigError(
            f"${{{expression}}}: step '{name}' has no output '{key}'",
            hint=f"its outputs are: {', '.join(sorted(outputs[name])) or 'none'}",
        )
    return outputs[name][key]


def secret_names(value: Any) -> list[str]:
    """The secrets ``${secret.NAME}`` / ``${secret.NAME.FIELD}`` references in ``value`` name, in order."""
    if isinstance(value, dict):
        return list(dict.fromkeys(name for item in value.values() for name in secret_names(item)))
    if isinstance(value, list):
        return list(dict.fromkeys(name for item in value for name in secret_names(item)))
    if not isinstance(value, str):
        return []
    names = []
    for match in REFERENCE.finditer(value):
        parts = match[1].strip().split(".")
        if parts[0] == "secret" and len(parts) >= 2:
            names.append(parts[1] if len(parts) == 2 else ".".join(parts[1:-1]))
    return list(dict.fromkeys(names))


def resolve_secrets(value: Any, account: Account) -> Any:
    """Substitute ${secret.NAME} and ${secret.NAME.FIELD} from the secret store, at the moment of use."""
    if isinstance(value, dict):
        return {key: resolve_secrets(item, account) for key, item in value.items()}
    if not isinstance(value, str):
        return value

    def secret(match: re.Match[str]) -> str:
        parts = match[1].strip().split(".")
        if parts[0] != "secret":
            return match[0]
        if len(parts) == 2:
            found = get_secret(account, parts[1])
            return found if isinstance(found, str) else json.dumps(found)
        return field_of(get_secret(account, ".".join(parts[1:-1])), parts[-1])

    return REFERENCE.sub(secret, value)
