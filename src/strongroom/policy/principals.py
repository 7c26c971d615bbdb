"""Principal ARNs in IAM's shape.

``arn:strongroom:iam::<account-id>:root`` stands for a whole account (in a policy's Principal it matches
every principal of that account, as in AWS); ``arn:strongroom:iam::<account-id>:user/<name>`` is one
principal holding credentials. The local CLI of an account acts as that account's root.
"""

from __future__ import annotations

import re

from strongroom.errors import UsageError

PRINCIPAL_PATTERN = re.compile(
    r"^arn:strongroom:iam::(?P<account>\d{12}):(?P<name>root|user/[A-Za-z0-9+=,.@_-]{1,64})$"
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")


def root_arn(account_id: str) -> str:
    return f"arn:strongroom:iam::{account_id}:root"


def user_arn(account_id: str, name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(
            f"'{name}' is not a valid principal name",
            hint="Use 1-64 letters, digits and +=,.@_- characters",
        )
    return f"arn:strongroom:iam::{account_id}:user/{name}"


def account_of(principal_arn: str) -> str:
    match = PRINCIPAL_PATTERN.match(principal_arn)
    if not match:
        raise UsageError(f"'{principal_arn}' is not a principal ARN", hint="Principals look like " + root_arn("1" * 12))
    return match["account"]


def is_principal_arn(text: str) -> bool:
    return PRINCIPAL_PATTERN.match(text) is not None
