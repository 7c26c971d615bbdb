"""Vault access policies: validation that names the field, and evaluation as AWS evaluates resource policies."""

from __future__ import annotations

from typing import Any

import pytest

from strongroom.errors import AccessDeniedError, ConfigError
from strongroom.policy.document import (
    AccessRequest,
    PolicyDocument,
    authorize,
    default_destination_policy,
    explicitly_allows,
)
from strongroom.policy.principals import root_arn, user_arn

OWNER, SOURCE, OTHER = "111111111111", "222222222222", "333333333333"
VAULT = f"arn:strongroom:backup:local:{OWNER}:backup-vault:Destination"
POINT = f"arn:strongroom:backup:local:{OWNER}:recovery-point:0f1e2d3c"
SOURCE_VAULT = f"arn:strongroom:backup:local:{SOURCE}:backup-vault:Default"
ELSEWHERE_VAULT = f"arn:strongroom:backup:local:{OTHER}:backup-vault:Default"
ADMIN = user_arn(OWNER, "admin")
OPS = user_arn(OWNER, "ops")


def allowed(
    document: PolicyDocument | None, principal: str, action: str, resource: str = VAULT, **context: list[str]
) -> bool:
    """Is the request allowed? Context keys come as s3_tag for s3:tag."""
    keys = {key.replace("_", ":"): values for key, values in context.items()}
    request = AccessRequest(principal, f"backup:{action}", resource, keys)
    try:
        authorize(document, request, owner_account_id=OWNER)
    except AccessDeniedError:
        return False
    return True


def denial(document: PolicyDocument | None, principal: str, action: str, resource: str = VAULT) -> str:
    with pytest.raises(AccessDeniedError) as caught:
        authorize(document, AccessRequest(principal, f"backup:{action}", resource), owner_account_id=OWNER)
    return caught.value.one_line()


def policy(*statements: dict[str, Any]) -> PolicyDocument:
    return PolicyDocument.parse({"Version": "2012-10-17", "Statement": list(statements)})


def statement(effect: str = "Allow", principal: Any = "*", action: Any = "backup:*", **extra: Any) -> dict[str, Any]:
    """A statement; a field given as None is left out."""
    item = {"Effect": effect, "Principal": principal, "Action": action, "Resource": "*", **extra}
    return {key: value for key, value in item.items() if value is not None}


# Validation ---------------------------------------------------------------------------------------
def _with(**changes: Any) -> dict[str, Any]:
    """A document whose second statement has the changes."""
    return {"Version": "2012-10-17", "Statement": [statement(), statement(**changes)]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "access policy: not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        ([], "access policy: must be a JSON object"),
        ({"Statement": []}, "access policy Statement: must be a statement or a non-empty list of statements"),
        ({"Version": "2020-01-01", "Statement": [statement()]}, "access policy Version: must be one of 2012-10-17"),
        ({"Statement": [statement()], "Extra": 1}, "access policy Extra: unknown field"),
        (_with(effect="Maybe"), "access policy Statement[1].Effect: must be Allow or Deny"),
        (_with(Sid=7), "access policy Statement[1].Sid: must be a string"),
        (_with(principal=None), "access policy Statement[1].Principal: is required"),
        (_with(NotPrincipal="*"), "access policy Statement[1]: give Principal or NotPrincipal, not both"),
        (_with(principal={"Service": "backup.amazonaws.com"}), "access policy Statement[1].Principal: must be"),
        (_with(principal={"AWS": "bob"}), "Statement[1].Principal.AWS: 'bob' is not \"*\", a 12-digit account id"),
        (
            _with(principal={"AWS": [OWNER, "arn:aws:iam::1:root"]}),
            "Statement[1].Principal.AWS[1]: 'arn:aws:iam::1:root'",
        ),
        (_with(action=None), "access policy Statement[1].Action: is required"),
        (_with(action="backup:DeleteEverything"), "Statement[1].Action: unknown action 'backup:DeleteEverything'"),
        (_with(action=["backup:Delete*", "s3:GetObject"]), "Statement[1].Action[1]: 's3:GetObject' is not a backup:"),
        (_with(action=["backup:Get*", 5]), "Statement[1].Action: must be a string or a non-empty list of strings"),
        (_with(action=None, NotAction="backup:Nothing*"), "Statement[1].NotAction: unknown action 'backup:Nothing*'"),
        (_with(Resource="my-vault"), "Statement[1].Resource: 'my-vault' is not \"*\" or an ARN"),
        (_with(Colour="red"), "access policy Statement[1].Colour: unknown field"),
        (_with(Condition={"NumericEquals": {"k": "1"}}), "Statement[1].Condition.NumericEquals: unknown condition"),
        (_with(Condition={"ForSomeValues:StringLike": {"k": "1"}}), "Condition.ForSomeValues:StringLike: unknown"),
        (_with(Condition={"StringEquals": {"k": 1}}), "Statement[1].Condition.StringEquals.k: must be a string or"),
        (_with(Condition={"StringEquals": {}}), "Statement[1].Condition.StringEquals: must be an object of condition"),
        ({"Statement": [statement(Sid="A"), statement(Sid="A")]}, "access policy Statement: each Sid must be unique"),
    ],
)
def test_invalid_documents_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyDocument.parse(raw)
    assert message in caught.value.message, caught.value.message
    assert caught.value.exit_code == 2


def test_errors_name_where_the_document_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^policy\.json Statement\[0\]\.Effect: must be Allow or Deny"):
        PolicyDocument.parse({"Statement": {**statement(), "Effect": "allow"}}, where="policy.json")


def test_a_document_round_trips_as_written() -> None:
    raw = {"Version": "2012-10-17", "Id": "x", "Statement": {**statement(), "Sid": "One"}}
    document = PolicyDocument.parse(raw)
    assert document.as_dict() == raw
    assert PolicyDocument.parse('{"Statement": {"Effect": "Deny", "Principal": "*", "Action": "*"}}').statements


# Evaluation ---------------------------------------------------------------------------------------
def test_without_a_policy_only_the_owner_account_may_act() -> None:
    assert allowed(None, root_arn(OWNER), "DeleteRecoveryPoint")
    assert allowed(None, OPS, "DeleteBackupVault")
    assert "need an explicit Allow" in denial(None, root_arn(SOURCE), "CopyIntoBackupVault")
    assert "the vault has no access policy" in denial(None, root_arn(SOURCE), "CopyIntoBackupVault")


@pytest.mark.parametrize("principal_entry", [SOURCE, root_arn(SOURCE), user_arn(SOURCE, "ci"), "*"])
def test_another_account_needs_an_allow_naming_it(principal_entry: str) -> None:
    document = policy(statement(principal={"AWS": principal_entry}, action="backup:CopyIntoBackupVault"))
    assert allowed(document, user_arn(SOURCE, "ci"), "CopyIntoBackupVault")
    assert not allowed(document, user_arn(SOURCE, "ci"), "DeleteRecoveryPoint", POINT)
    assert allowed(document, user_arn(OTHER, "x"), "CopyIntoBackupVault") == (principal_entry == "*")


def test_a_user_arn_names_only_that_user() -> None:
    document = policy(statement(principal={"AWS": [user_arn(SOURCE, "ci")]}))
    assert allowed(document, user_arn(SOURCE, "ci"), "GetRecoveryPoint", POINT)
    assert not allowed(document, user_arn(SOURCE, "other"), "GetRecoveryPoint", POINT)
    assert not allowed(document, root_arn(SOURCE), "GetRecoveryPoint", POINT)


def test_explicit_deny_wins_over_any_allow_and_over_ownership() -> None:
    document = policy(
        statement(principal={"AWS": [root_arn(SOURCE), root_arn(OWNER)]}),
        statement("Deny", "*", ["backup:DeleteRecoveryPoint"], Sid="NoDeletes"),
    )
    for principal in (root_arn(SOURCE), root_arn(OWNER), OPS):
        assert allowed(document, principal, "GetRecoveryPoint", POINT)
        message = denial(document, principal, "DeleteRecoveryPoint", POINT)
        assert message.startswith(
            f"{principal} may not backup:DeleteRecoveryPoint on {POINT}: denied by statement "
            "'NoDeletes' of the vault's access policy"
        ), message


def test_a_statement_without_sid_is_named_by_its_index() -> None:
    document = policy(statement(), statement("Deny", action="backup:DeleteBackupVault"))
    assert "denied by statement Statement[1]" in denial(document, OPS, "DeleteBackupVault")


@pytest.mark.parametrize(
    ("pattern", "action", "matches"),
    [
        ("backup:Delete*", "DeleteRecoveryPoint", True),
        ("backup:Delete*", "DeleteBackupVaultLockConfiguration", True),
        ("backup:Delete*", "CopyIntoBackupVault", False),
        ("*", "StartRestoreJob", True),
        ("backup:*", "UpdateRecoveryPointLifecycle", True),
        ("backup:deleterecoverypoint", "DeleteRecoveryPoint", True),
        ("DeleteRecoveryPoint", "DeleteRecoveryPoint", True),
        ("backup:*BackupVault", "CopyFromBackupVault", True),
        ("backup:*BackupVault", "PutBackupVaultAccessPolicy", False),
        ("backup:Put?ackupVault*", "PutBackupVaultLockConfiguration", True),
    ],
)
def test_action_wildcards(pattern: str, action: str, matches: bool) -> None:
    document = policy(statement("Deny", action=pattern))
    assert allowed(document, OPS, action) != matches


def test_not_action_denies_everything_else() -> None:
    document = policy(statement("Deny", action=None, NotAction=["backup:Get*", "backup:Describe*"]))
    assert allowed(document, OPS, "GetRecoveryPoint", POINT)
    assert allowed(document, OPS, "DescribeBackupVault")
    assert not allowed(document, OPS, "DeleteRecoveryPoint", POINT)
    assert not allowed(document, OPS, "CopyFromBackupVault", POINT)


def test_not_principal_exempts_the_named_principals() -> None:
    document = policy({"Effect": "Deny", "NotPrincipal": {"AWS": ADMIN}, "Action": "backup:DeleteRecoveryPoint"})
    assert allowed(document, ADMIN, "DeleteRecoveryPoint", POINT)
    assert not allowed(document, OPS, "DeleteRecoveryPoint", POINT)
    account_wide = policy({"Effect": "Deny", "NotPrincipal": {"AWS": OWNER}, "Action": "backup:*"})
    assert allowed(account_wide, OPS, "DeleteRecoveryPoint", POINT)
    assert not allowed(account_wide, root_arn(SOURCE), "DeleteRecoveryPoint", POINT)


def test_resources_match_with_wildcards() -> None:
    points = f"arn:strongroom:backup:local:{OWNER}:recovery-point:*"
    document = policy(statement("Deny", action="backup:*", Resource=points))
    assert not allowed(document, OPS, "DeleteRecoveryPoint", POINT)
    assert allowed(document, OPS, "DeleteBackupVault", VAULT)
    exact = policy(statement("Deny", action="backup:*", Resource=None, NotResource=[VAULT]))
    assert allowed(exact, OPS, "DescribeBackupVault", VAULT)
    assert not allowed(exact, OPS, "GetRecoveryPoint", POINT)


def _condition(condition: dict[str, Any]) -> PolicyDocument:
    """Deny deletion when the condition holds."""
    return policy(statement("Deny", action="backup:DeleteRecoveryPoint", Condition=condition))


def _denied_with(document: PolicyDocument, principal: str = OPS, **context: list[str]) -> bool:
    return not allowed(document, principal, "DeleteRecoveryPoint", POINT, **context)


@pytest.mark.parametrize(
    ("condition", "context", "denied"),
    [
        ({"StringEquals": {"s3:tag": "red"}}, {"s3_tag": ["red"]}, True),
        ({"StringEquals": {"s3:tag": "red"}}, {"s3_tag": ["Red"]}, False),
        ({"StringEquals": {"s3:tag": "red"}}, {}, False),  # a missing key matches no positive operator
        ({"StringNotEquals": {"s3:tag": "red"}}, {}, True),  # ... and every negated one
        ({"StringNotEquals": {"s3:tag": ["red", "blue"]}}, {"s3_tag": ["blue"]}, False),
        ({"StringNotEquals": {"s3:tag": ["red", "blue"]}}, {"s3_tag": ["green"]}, True),
        ({"StringLike": {"s3:tag": "r?d*"}}, {"s3_tag": ["rods"]}, True),
        ({"StringNotLike": {"s3:tag": "r*"}}, {"s3_tag": ["rods"]}, False),
        ({"StringNotLike": {"s3:tag": "r*"}}, {}, True),
        ({"StringEqualsIfExists": {"s3:tag": "red"}}, {}, True),
        ({"StringEqualsIfExists": {"s3:tag": "red"}}, {"s3_tag": ["blue"]}, False),
        ({"ForAnyValue:StringEquals": {"s3:tag": "red"}}, {"s3_tag": ["blue", "red"]}, True),
        ({"ForAnyValue:StringEquals": {"s3:tag": "red"}}, {}, False),
        ({"ForAnyValue:StringNotEquals": {"s3:tag": "red"}}, {}, False),
        ({"ForAllValues:StringEquals": {"s3:tag": ["red", "blue"]}}, {"s3_tag": ["blue", "red"]}, True),
        ({"ForAllValues:StringEquals": {"s3:tag": ["red", "blue"]}}, {"s3_tag": ["blue", "green"]}, False),
        ({"ForAllValues:StringEquals": {"s3:tag": "red"}}, {}, True),  # vacuously true, as in AWS
        ({"StringEquals": {"S3:TAG": "red"}}, {"s3_tag": ["red"]}, True),  # keys are case-insensitive
        ({"StringEquals": {"s3:tag": "red", "s3:size": "big"}}, {"s3_tag": ["red"]}, False),  # keys are ANDed
    ],
)
def test_string_conditions(condition: dict[str, Any], context: dict[str, list[str]], denied: bool) -> None:
    assert _denied_with(_condition(condition), **context) == denied


@pytest.mark.parametrize(
    ("condition", "principal", "denied"),
    [
        ({"ArnEquals": {"aws:PrincipalArn": OPS}}, OPS, True),
        ({"ArnEquals": {"aws:PrincipalArn": OPS}}, ADMIN, False),
        ({"ArnLike": {"aws:PrincipalArn": f"arn:strongroom:iam::{OWNER}:user/o*"}}, OPS, True),
        ({"ArnLike": {"aws:PrincipalArn": "arn:strongroom:iam::*:user/ops"}}, user_arn(SOURCE, "ops"), True),
        ({"ArnLike": {"aws:PrincipalArn": "arn:strongroom:iam::*:root"}}, OPS, False),
        ({"ArnNotLike": {"aws:PrincipalArn": [ADMIN, root_arn(OWNER)]}}, OPS, True),
        ({"ArnNotLike": {"aws:PrincipalArn": [ADMIN, root_arn(OWNER)]}}, ADMIN, False),
        ({"ArnNotEquals": {"aws:PrincipalArn": ADMIN}}, root_arn(OWNER), True),
        ({"StringEquals": {"aws:PrincipalAccount": OWNER}}, OPS, True),
        ({"StringEquals": {"aws:PrincipalAccount": OWNER}}, root_arn(SOURCE), False),
    ],
)
def test_principal_conditions(condition: dict[str, Any], principal: str, denied: bool) -> None:
    document = policy(
        statement("Allow", {"AWS": SOURCE}), statement("Deny", action="backup:DeleteRecoveryPoint", Condition=condition)
    )
    assert _denied_with(document, principal) == denied


def test_a_caller_cannot_supply_the_principal_keys() -> None:
    document = _condition({"ArnNotEquals": {"aws:PrincipalArn": ADMIN}})
    assert _denied_with(document, OPS, aws_PrincipalArn=[ADMIN])


def test_explicitly_allows_only_principals_named_by_arn_or_account() -> None:
    def named(document: PolicyDocument | None, principal: str, action: str = "DeleteRecoveryPoint") -> bool:
        return explicitly_allows(document, AccessRequest(principal, f"backup:{action}", POINT))

    by_user = policy(statement(principal={"AWS": ADMIN}, action="backup:Delete*"))
    assert named(by_user, ADMIN) and not named(by_user, OPS) and not named(by_user, root_arn(OWNER))
    assert not named(by_user, ADMIN, "UpdateRecoveryPointLifecycle")
    by_account = policy(statement(principal={"AWS": OWNER}))
    assert named(by_account, OPS) and named(by_account, root_arn(OWNER)) and not named(by_account, root_arn(SOURCE))
    assert named(policy(statement(principal={"AWS": root_arn(OWNER)})), OPS)
    assert not named(policy(statement(principal="*")), OPS)
    assert not named(policy(statement(principal={"AWS": "*"})), OPS)
    assert not named(policy(statement("Deny", principal={"AWS": ADMIN})), ADMIN)
    conditional = policy(statement(principal={"AWS": ADMIN}, Condition={"StringEquals": {"x:ticket": "42"}}))
    assert not named(conditional, ADMIN)
    assert not named(None, ADMIN)


# The blueprint's destination policy -------------------------------------------------------------
@pytest.fixture
def destination() -> PolicyDocument:
    return PolicyDocument.parse(
        default_destination_policy(
            source_account_ids=[SOURCE], source_vault_arns=[SOURCE_VAULT], admin_principal_arns=[ADMIN]
        )
    )


DESTRUCTIVE = [
    "DeleteRecoveryPoint",
    "UpdateRecoveryPointLifecycle",
    "PutBackupVaultAccessPolicy",
    "DeleteBackupVaultAccessPolicy",
    "DeleteBackupVault",
    "PutBackupVaultLockConfiguration",
    "DeleteBackupVaultLockConfiguration",
    "StartRestoreJob",
]


def test_the_source_copies_in_and_reads(destination: PolicyDocument) -> None:
    for principal in (root_arn(SOURCE), user_arn(SOURCE, "copier")):
        assert allowed(destination, principal, "CopyIntoBackupVault")
        assert allowed(destination, principal, "DescribeBackupVault")
        assert allowed(destination, principal, "GetRecoveryPoint", POINT)
    assert not allowed(destination, root_arn(OTHER), "CopyIntoBackupVault")


@pytest.mark.parametrize("action", DESTRUCTIVE)
def test_only_named_administrators_may_destroy(destination: PolicyDocument, action: str) -> None:
    for principal in (root_arn(SOURCE), user_arn(SOURCE, "copier"), root_arn(OWNER), OPS, root_arn(OTHER)):
        assert not allowed(destination, principal, action, POINT)
    assert "'DenyBackupVaultAccess'" in denial(destination, root_arn(OWNER), action, POINT)
    assert allowed(destination, ADMIN, action, POINT)
    assert explicitly_allows(destination, AccessRequest(ADMIN, f"backup:{action}", POINT))
    assert not explicitly_allows(destination, AccessRequest(OPS, f"backup:{action}", POINT))


def test_copies_go_back_only_to_the_source_vault(destination: PolicyDocument) -> None:
    assert allowed(destination, root_arn(SOURCE), "CopyFromBackupVault", POINT, backup_CopyTargets=[SOURCE_VAULT])
    assert allowed(destination, ADMIN, "CopyFromBackupVault", POINT, backup_CopyTargets=[SOURCE_VAULT])
    for targets in ([ELSEWHERE_VAULT], [SOURCE_VAULT, ELSEWHERE_VAULT], []):
        for principal in (root_arn(SOURCE), ADMIN, root_arn(OWNER)):
            assert not allowed(destination, principal, "CopyFromBackupVault", POINT, backup_CopyTargets=targets)
    assert "'DenyBackupCopyExceptToSourceAccount'" in denial(destination, root_arn(SOURCE), "CopyFromBackupVault")


def test_without_administrators_nobody_may_destroy() -> None:
    raw = default_destination_policy(source_account_ids=[SOURCE], source_vault_arns=[], admin_principal_arns=[])
    document = PolicyDocument.parse(raw)
    assert [s["Sid"] for s in raw["Statement"]] == [
        "AllowSourceAccountCopyIn",
        "DenyBackupVaultAccess",
        "DenyBackupCopyExceptToSourceAccount",
    ]
    for action in DESTRUCTIVE:
        assert not allowed(document, root_arn(OWNER), action, POINT)
    assert not allowed(document, root_arn(SOURCE), "CopyFromBackupVault", POINT, backup_CopyTargets=[SOURCE_VAULT])
    assert allowed(document, root_arn(SOURCE), "CopyIntoBackupVault")


def test_the_default_policy_checks_its_inputs() -> None:
    with pytest.raises(ConfigError, match="source account id '12' is not 12 digits"):
        default_destination_policy(source_account_ids=["12"], source_vault_arns=[], admin_principal_arns=[])
    with pytest.raises(ConfigError, match="administrator 'root' is not a principal ARN"):
        default_destination_policy(source_account_ids=[SOURCE], source_vault_arns=[], admin_principal_arns=["root"])
