"""Vault access policies in AWS's shape: parse and validate a document, then judge requests against it.

A document is ``{"Version": "2012-10-17", "Statement": [...]}``; each statement has ``Effect`` (Allow or
Deny), ``Principal`` or ``NotPrincipal``, ``Action`` or ``NotAction``, optionally ``Resource`` or
``NotResource`` (absent: every resource) and ``Condition``. Evaluation (docs/access-policy-and-lock.md):

1. a Deny statement that applies refuses the request, whatever else the document says;
2. a principal of the vault's own account is then allowed;
3. a principal of another account is allowed only by an Allow statement that applies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from strongroom.errors import AccessDeniedError, ConfigError
from strongroom.policy.principals import account_of, is_principal_arn, root_arn

ACTION_PREFIX = "backup:"
ACTIONS = (
    "CopyIntoBackupVault",
    "CopyFromBackupVault",
    "DeleteRecoveryPoint",
    "UpdateRecoveryPointLifecycle",
    "PutBackupVaultAccessPolicy",
    "GetBackupVaultAccessPolicy",
    "DeleteBackupVaultAccessPolicy",
    "DeleteBackupVault",
    "PutBackupVaultLockConfiguration",
    "DeleteBackupVaultLockConfiguration",
    "StartRestoreJob",
    "GetRecoveryPoint",
    "DescribeBackupVault",
    "ListRecoveryPointsByBackupVault",
)
VERSIONS = ("2012-10-17", "2008-10-17")
DOCUMENT_KEYS = ("Version", "Id", "Statement")
STATEMENT_KEYS = (
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
)
ACCOUNT_ID = re.compile(r"^\d{12}$")
PRINCIPAL_ARN_KEY = "aws:PrincipalArn"
PRINCIPAL_ACCOUNT_KEY = "aws:PrincipalAccount"
DOCS_HINT = "See docs/access-policy-and-lock.md for the policy language"


def _glob(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    return _compiled(pattern, ignore_case).fullmatch(text) is not None


@cache
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL)


def _arn_like(text: str, pattern: str) -> bool:
    """AWS's ArnLike: the six colon-separated parts compared one by one, each with * and ? wildcards."""
    if pattern == "*":
        return True
    parts, wanted = text.split(":", 5), pattern.split(":", 5)
    return len(parts) == len(wanted) == 6 and all(_glob(w, p) for p, w in zip(parts, wanted, strict=True))


MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda value, wanted: value == wanted,
    "StringLike": lambda value, wanted: _glob(wanted, value),
    "ArnEquals": _arn_like,
    "ArnLike": _arn_like,
}
OPERATORS = (
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "ArnEquals",
    "ArnNotEquals",
    "ArnLike",
    "ArnNotLike",
)
QUALIFIERS = ("ForAnyValue", "ForAllValues")


@dataclass(frozen=True)
class AccessRequest:
    principal_arn: str
    action: str  # "backup:DeleteRecoveryPoint"
    resource_arn: str  # the vault's ARN, or a recovery point's for actions on one
    context: dict[str, list[str]] = field(default_factory=dict)  # e.g. {"backup:CopyTargets": [vault_arn]}

    @property
    def action_name(self) -> str:
        return _strip_prefix(self.action)

    @property
    def principal_account(self) -> str:
        return account_of(self.principal_arn)


@dataclass(frozen=True)
class Condition:
    operator: str  # one of OPERATORS
    qualifier: str | None  # ForAnyValue, ForAllValues or None
    if_exists: bool
    key: str
    values: tuple[str, ...]

    def holds(self, context: dict[str, list[str]]) -> bool:
        present = context.get(self.key.lower()) or []
        negated = "Not" in self.operator
        matcher = MATCHERS[self.operator.replace("Not", "")]

        def test(value: str) -> bool:
            return any(matcher(value, wanted) for wanted in self.values) != negated

        if not present:  # AWS: an absent key matches only negated operators (and IfExists, ForAllValues)
            return self.if_exists or self.qualifier == "ForAllValues" or (negated and self.qualifier is None)
        if self.qualifier == "ForAllValues":
            return all(test(value) for value in present)
        return any(test(value) for value in present)


@dataclass(frozen=True)
class Statement:
    index: int
    sid: str | None
    effect: str
    principals: tuple[str, ...] | None  # "*", 12-digit account ids, principal ARNs
    not_principals: tuple[str, ...] | None
    actions: tuple[str, ...] | None  # name patterns without the prefix
    not_actions: tuple[str, ...] | None
    resources: tuple[str, ...] | None
    not_resources: tuple[str, ...] | None
    conditions: tuple[Condition, ...]

    @property
    def label(self) -> str:
        return f"'{self.sid}'" if self.sid else f"Statement[{self.index}]"

    def applies(self, request: AccessRequest, context: dict[str, list[str]]) -> bool:
        def action_matches(pattern: str) -> bool:
            return _glob(pattern, request.action_name, ignore_case=True)

        def resource_matches(pattern: str) -> bool:
            return _glob(pattern, request.resource_arn)

        return (
            self._principal_matches(request)
            and _listed_or_not(self.actions, self.not_actions, action_matches)
            and _listed_or_not(self.resources, self.not_resources, resource_matches)
            and all(condition.holds(context) for condition in self.conditions)
        )

    def names(self, request: AccessRequest) -> bool:
        """Does the Principal element name this principal, by its ARN or its account (never by "*")?"""
        return any(entry != "*" and _principal_entry_matches(entry, request) for entry in self.principals or ())

    def _principal_matches(self, request: AccessRequest) -> bool:
        if self.principals is not None:
            return any(_principal_entry_matches(entry, request) for entry in self.principals)
        return not any(_principal_entry_matches(entry, request) for entry in self.not_principals or ())


def _listed_or_not(
    listed: tuple[str, ...] | None, excluded: tuple[str, ...] | None, match: Callable[[str], bool]
) -> bool:
    if listed is not None:
        return any(match(pattern) for pattern in listed)
    if excluded is not None:
        return not any(match(pattern) for pattern in excluded)
    return True


def _principal_entry_matches(entry: str, request: AccessRequest) -> bool:
    account = request.principal_account
    return entry in ("*", account, root_arn(account), request.principal_arn)


class PolicyDocument:
    """A parsed, validated access policy; :meth:`as_dict` gives back the document as written."""

    def __init__(self, raw: dict[str, Any], statements: tuple[Statement, ...]) -> None:
        self._raw = raw
        self.statements = statements

    @classmethod
    def parse(cls, raw: dict[str, Any] | str, *, where: str = "access policy") -> PolicyDocument:
        document = _load(raw, where)
        _only_keys(document, DOCUMENT_KEYS, where, "")
        if "Version" in document and document["Version"] not in VERSIONS:
            raise _error(where, "Version", f"must be one of {', '.join(VERSIONS)}")
        statements = document.get("Statement")
        if isinstance(statements, dict):
            statements = [statements]
        if not isinstance(statements, list) or not statements:
            raise _error(where, "Statement", "must be a statement or a non-empty list of statements")
        parsed = tuple(_statement(item, index, where) for index, item in enumerate(statements))
        sids = [s.sid for s in parsed if s.sid]
        if len(sids) != len(set(sids)):
            raise _error(where, "Statement", "each Sid must be unique")
        return cls(deepcopy(document), parsed)

    def as_dict(self) -> dict[str, Any]:
        return deepcopy(self._raw)


def authorize(document: PolicyDocument | None, request: AccessRequest, *, owner_account_id: str) -> None:
    """Allow the request or raise AccessDeniedError saying why (the denying statement, or no Allow)."""
    context = _context(request)
    for statement in _statements(document, "Deny"):
        if statement.applies(request, context):
            raise AccessDeniedError(
                f"{_who_what(request)}: denied by statement {statement.label} of the vault's access policy",
                hint="An explicit Deny always wins; only the principals the statement exempts may do this",
            )
    if request.principal_account == owner_account_id:
        return
    if any(s.applies(request, context) for s in _statements(document, "Allow")):
        return
    why = "no statement of the vault's access policy allows it" if document else "the vault has no access policy"
    raise AccessDeniedError(
        f"{_who_what(request)}: {why}, and principals of account {request.principal_account} need an explicit Allow",
        hint=f"Ask the vault's owner (account {owner_account_id}) to allow this principal or its account",
    )


def explicitly_allows(document: PolicyDocument | None, request: AccessRequest) -> bool:
    """Does an Allow statement that names the principal (its ARN or its account, never "*") cover the request?

    These are the principals who may bypass a governance-mode vault lock.
    """
    context = _context(request)
    return any(s.names(request) and s.applies(request, context) for s in _statements(document, "Allow"))


def default_destination_policy(
    *, source_account_ids: list[str], source_vault_arns: list[str], admin_principal_arns: list[str]
) -> dict[str, Any]:
    """The blueprint's destination vault policy: the source copies in and back out, nobody else destroys."""
    for account_id in source_account_ids:
        if not ACCOUNT_ID.match(account_id):
            raise ConfigError(f"source account id '{account_id}' is not 12 digits")
    for arn in admin_principal_arns:
        if not is_principal_arn(arn):
            raise ConfigError(f"administrator '{arn}' is not a principal ARN", hint=f"For example {root_arn('1' * 12)}")
    statements: list[dict[str, Any]] = []
    if source_account_ids:
        statements.append(
            _policy_statement(
                "AllowSourceAccountCopyIn",
                "Allow",
                {"AWS": [root_arn(a) for a in source_account_ids]},
                [
                    "CopyIntoBackupVault",
                    "GetRecoveryPoint",
                    "DescribeBackupVault",
                    "CopyFromBackupVault",
                    "ListRecoveryPointsByBackupVault",
                ],
            )
        )
    if admin_principal_arns:
        statements.append(_policy_statement("AllowNamedAdministrators", "Allow", {"AWS": admin_principal_arns}, ["*"]))
    protected = [
        "DeleteRecoveryPoint",
        "UpdateRecoveryPointLifecycle",
        "PutBackupVaultAccessPolicy",
        "DeleteBackupVaultAccessPolicy",
        "DeleteBackupVault",
        "PutBackupVaultLockConfiguration",
        "DeleteBackupVaultLockConfiguration",
        "StartRestoreJob",
    ]
    statements.append(
        _policy_statement(
            "DenyBackupVaultAccess",
            "Deny",
            "*",
            protected,
            {"ArnNotLike": {PRINCIPAL_ARN_KEY: admin_principal_arns}} if admin_principal_arns else None,
        )
    )
    statements.append(
        _policy_statement(
            "DenyBackupCopyExceptToSourceAccount",
            "Deny",
            "*",
            ["CopyFromBackupVault"],
            {"StringNotEquals": {"backup:CopyTargets": source_vault_arns}} if source_vault_arns else None,
        )
    )
    return {"Version": VERSIONS[0], "Id": "strongroom-default-destination", "Statement": statements}


def _policy_statement(
    sid: str, effect: str, principal: Any, actions: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    statement = {
        "Sid": sid,
        "Effect": effect,
        "Principal": principal,
        "Action": [ACTION_PREFIX + a for a in actions],
        "Resource": "*",
    }
    if condition:
        statement["Condition"] = condition
    return statement


# Evaluation helpers --------------------------------------------------------------------------------
def _statements(document: PolicyDocument | None, effect: str) -> list[Statement]:
    return [s for s in (document.statements if document else ()) if s.effect == effect]


def _context(request: AccessRequest) -> dict[str, list[str]]:
    """Condition keys, case-insensitive as in AWS; the principal's own keys cannot be supplied by a caller."""
    context = {key.lower(): list(values) for key, values in request.context.items()}
    context[PRINCIPAL_ARN_KEY.lower()] = [request.principal_arn]
    context[PRINCIPAL_ACCOUNT_KEY.lower()] = [request.principal_account]
    return context


def _who_what(request: AccessRequest) -> str:
    return f"{request.principal_arn} may not {ACTION_PREFIX}{request.action_name} on {request.resource_arn}"


def _strip_prefix(action: str) -> str:
    return action[len(ACTION_PREFIX) :] if action.lower().startswith(ACTION_PREFIX) else action


# Parsing helpers -----------------------------------------------------------------------------------
def _error(where: str, path: str, problem: str) -> ConfigError:
    return ConfigError(f"{where} {path}: {problem}" if path else f"{where}: {problem}", hint=DOCS_HINT)


def _load(raw: dict[str, Any] | str, where: str) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _error(where, "", f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(raw, dict):
        raise _error(where, "", "must be a JSON object with Version and Statement")
    return raw


def _only_keys(item: dict[str, Any], allowed: tuple[str, ...], where: str, path: str) -> None:
    for key in item:
        if key not in allowed:
            raise _error(where, f"{path}{'.' if path else ''}{key}", f"unknown field (allowed: {', '.join(allowed)})")


def _statement(item: Any, index: int, where: str) -> Statement:
    path = f"Statement[{index}]"
    if not isinstance(item, dict):
        raise _error(where, path, "must be an object")
    _only_keys(item, STATEMENT_KEYS, where, path)
    sid = item.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise _error(where, f"{path}.Sid", "must be a string")
    if item.get("Effect") not in ("Allow", "Deny"):
        raise _error(where, f"{path}.Effect", "must be Allow or Deny")
    principals, not_principals = _one_of(item, "Principal", where, path, _principals, required=True)
    actions, not_actions = _one_of(item, "Action", where, path, _actions, required=True)
    resources, not_resources = _one_of(item, "Resource", where, path, _resources, required=False)
    conditions = _conditions(item.get("Condition", {}), where, f"{path}.Condition")
    return Statement(
        index,
        sid,
        item["Effect"],
        principals,
        not_principals,
        actions,
        not_actions,
        resources,
        not_resources,
        conditions,
    )


Parser = Callable[[Any, str, str], tuple[str, ...]]


def _one_of(
    item: dict[str, Any], name: str, where: str, path: str, parse: Parser, *, required: bool
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    negated = f"Not{name}"
    if name in item and negated in item:
        raise _error(where, path, f"give {name} or {negated}, not both")
    if name in item:
        return parse(item[name], where, f"{path}.{name}"), None
    if negated in item:
        return None, parse(item[negated], where, f"{path}.{negated}")
    if required:
        raise _error(where, f"{path}.{name}", "is required")
    return None, None


def _strings(value: Any, where: str, path: str) -> list[tuple[str, str]]:
    """The value as (path, string) pairs: a string or a non-empty list of strings."""
    if isinstance(value, str):
        return [(path, value)]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    raise _error(where, path, "must be a string or a non-empty list of strings")


def _principals(value: Any, where: str, path: str) -> tuple[str, ...]:
    if value == "*":
        return ("*",)
    if not isinstance(value, dict) or set(value) != {"AWS"}:
        raise _error(where, path, 'must be "*" or {"AWS": ARN or [ARN, ...]} (only AWS-type principals exist here)')
    entries = _strings(value["AWS"], where, f"{path}.AWS")
    for entry_path, entry in entries:
        if entry != "*" and not ACCOUNT_ID.match(entry) and not is_principal_arn(entry):
            raise _error(where, entry_path, f"'{entry}' is not \"*\", a 12-digit account id or a principal ARN")
    return tuple(entry for _, entry in entries)


def _actions(value: Any, where: str, path: str) -> tuple[str, ...]:
    names = []
    for entry_path, entry in _strings(value, where, path):
        service, _, name = entry.rpartition(":")
        if service and service.lower() != "backup":
            raise _error(where, entry_path, f"'{entry}' is not a backup: action")
        if not any(_glob(name, known, ignore_case=True) for known in ACTIONS):
            raise _error(where, entry_path, f"unknown action '{entry}' (known: {', '.join(ACTIONS)})")
        names.append(name)
    return tuple(names)


def _resources(value: Any, where: str, path: str) -> tuple[str, ...]:
    entries = _strings(value, where, path)
    for entry_path, entry in entries:
        if entry != "*" and not entry.startswith("arn:"):
            raise _error(where, entry_path, f"'{entry}' is not \"*\" or an ARN (wildcards * and ? allowed)")
    return tuple(entry for _, entry in entries)


def _conditions(value: Any, where: str, path: str) -> tuple[Condition, ...]:
    if not isinstance(value, dict):
        raise _error(where, path, "must be an object of operators")
    conditions = []
    for operator_text, keys in value.items():
        operator, qualifier, if_exists = _operator(operator_text, where, f"{path}.{operator_text}")
        if not isinstance(keys, dict) or not keys:
            raise _error(where, f"{path}.{operator_text}", "must be an object of condition keys and values")
        for key, values in keys.items():
            strings = _strings(values, where, f"{path}.{operator_text}.{key}")
            conditions.append(Condition(operator, qualifier, if_exists, key, tuple(v for _, v in strings)))
    return tuple(conditions)


def _operator(text: str, where: str, path: str) -> tuple[str, str | None, bool]:
    qualifier, _, operator = text.rpartition(":")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if operator not in OPERATORS or (qualifier and qualifier not in QUALIFIERS):
        raise _error(
            where,
            path,
            f"unknown condition operator (supported: {', '.join(OPERATORS)}, optionally "
            "with ForAnyValue: or ForAllValues: before it and IfExists after it)",
        )
    return operator, qualifier or None, if_exists
