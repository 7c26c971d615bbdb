"""Records the services and front ends share: ARNs, states, jobs and recovery points."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# The clock lives in strongroom.clock (below every layer); services keep calling model.now().
from strongroom.clock import Clock as Clock
from strongroom.clock import driven_clock as driven_clock
from strongroom.clock import now as now
from strongroom.clock import system_clock as system_clock
from strongroom.errors import UsageError


class JobState(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"
    EXPIRED = "EXPIRED"  # a scheduled job that did not start within its rule's start window

    @property
    def finished(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.ABORTED, JobState.EXPIRED)


class RecoveryPointStatus(StrEnum):
    CREATING = "CREATING"
    COMPLETED = "COMPLETED"
    PARTIAL = "PARTIAL"
    EXPIRED = "EXPIRED"
    DELETED = "DELETED"


class JobType(StrEnum):
    BACKUP = "BACKUP"
    RESTORE = "RESTORE"
    COPY = "COPY"


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def new_id() -> str:
    """A random id in AWS's UUID shape, for jobs and recovery points."""
    raw = secrets.token_hex(16)
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


CONTINUOUS_MAX_DAYS = 35  # AWS Backup's longest continuous backup (PITR) retention: the longest WAL window
DEFAULT_VAULT = "Default"  # the vault every account has from ``init`` on, and every name's default

ARN_PATTERN = re.compile(
    r"^arn:strongroom:backup:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<kind>[a-z-]+):(?P<name>.+)$"
)


@dataclass(frozen=True)
class Arn:
    region: str
    account_id: str
    kind: str  # backup-vault, recovery-point
    name: str

    def __str__(self) -> str:
        return f"arn:strongroom:backup:{self.region}:{self.account_id}:{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Arn:
        match = ARN_PATTERN.match(text)
        if not match:
            raise UsageError(
                f"'{text}' is not a Strongroom ARN",
                hint="ARNs look like arn:strongroom:backup:<region>:<account-id>:recovery-point:<id>",
            )
        return cls(match["region"], match["account"], match["kind"], match["name"])


@dataclass
class Job:
    id: str
    job_type: JobType
    state: JobState
    resource_id: str | None
    vault_name: str | None
    recovery_point_arn: str | None
    creation_date: str
    start_date: str | None = None
    completion_date: str | None = None
    bytes_processed: int = 0
    status_message: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "job_type": self.job_type.value,
            "state": self.state.value,
            "resource_id": self.resource_id,
            "backup_vault_name": self.vault_name,
            "recovery_point_arn": self.recovery_point_arn,
            "creation_date": self.creation_date,
            "start_date": self.start_date,
            "completion_date": self.completion_date,
            "duration_seconds": _duration(self.start_date, self.completion_date),
            "bytes_processed": self.bytes_processed,
            "status_message": self.status_message,
            "parameters": self.parameters,
            "result": self.result,
        }


# Recovery point tags, bounded as AWS bounds resource tags.
MAX_TAGS = 50
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256


def tag_problem(tags: dict[str, str]) -> str | None:
    """Why ``tags`` cannot be recovery point tags, or None when they can."""
    if len(tags) > MAX_TAGS:
        return f"{len(tags)} tags; at most {MAX_TAGS} are allowed"
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return "tag keys and values must be strings"
        if not 1 <= len(key) <= MAX_TAG_KEY or key.startswith("aws:"):
            return f"tag key '{key[:40]}' must be 1 to {MAX_TAG_KEY} characters and not start with 'aws:'"
        if len(value) > MAX_TAG_VALUE:
            return f"the value of tag '{key[:40]}' is longer than {MAX_TAG_VALUE} characters"
        if not (key + value).isprintable():  # they are shown on terminals: no escape sequences
            return "tag keys and values must be printable (no control characters)"
    return None


def parse_tag_options(options: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` command-line options as tags; UsageError names a malformed one."""
    tags: dict[str, str] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag '{option}' is not KEY=VALUE", hint="For example: --tag owner=mavis")
        tags[key] = value
    problem = tag_problem(tags)
    if problem:
        raise UsageError(f"--tag: {problem}")
    return tags


@dataclass
class RecoveryPoint:
    id: str
    arn: str
    vault_name: str
    resource_id: str
    resource_type: str
    status: RecoveryPointStatus
    creation_date: str
    completion_date: str | None = None
    source_bytes: int = 0
    stored_bytes: int = 0
    new_bytes: int = 0
    backup_job_id: str | None = None
    status_message: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    delete_after_days: int | None = None  # retention counted from arrival_date; None keeps it forever
    delete_at: str | None = None
    lock_applies: bool = False  # created while the vault was locked: the lock governs its deletion
    source_recovery_point_arn: str | None = None  # set on copies
    # This account's clock when the point began to arrive here: a backup's creation_date, or the start of a copy
    # (whose creation_date is what the other account said, kept as information). Retention counts from it.
    arrival_date: str | None = None
    # The plan rule's recovery_point_tags (or 'backup start --tag'), carried by copies: information for
    # selecting points, never trusted for access or retention (not covered by the catalog's row MACs).
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "recovery_point_arn": self.arn,
            "recovery_point_id": self.id,
            "backup_vault_name": self.vault_name,
            "resource_id": self.resource_id,
            "resource_type": self.resource_type,
            "status": self.status.value,
            "status_message": self.status_message,
            "creation_date": self.creation_date,
            "arrival_date": self.arrival_date or self.creation_date,
            "completion_date": self.completion_date,
            "duration_seconds": _duration(self.arrival_date or self.creation_date, self.completion_date),
            "source_bytes": self.source_bytes,
            "stored_bytes": self.stored_bytes,
            "new_bytes": self.new_bytes,
            "backup_job_id": self.backup_job_id,
            "lifecycle": {"delete_after_days": self.delete_after_days},
            "calculated_lifecycle": {"delete_at": self.delete_at},
            "is_locked": self.lock_applies,
            "source_recovery_point_arn": self.source_recovery_point_arn,
            "metadata": self.metadata,
            "tags": dict(self.tags),
        }


@dataclass
class Resource:
    id: str
    type: str
    settings: dict[str, Any]
    tags: dict[str, str]
    created_at: str
    managed: bool = False  # created by 'apply': a later apply may change or remove it

    def as_dict(self) -> dict[str, Any]:
        return {
            "resource_id": self.id,
            "resource_type": self.type,
            "settings": self.settings,
            "tags": self.tags,
            "creation_date": self.created_at,
            "managed_by_config": self.managed,
        }


class LockMode(StrEnum):
    GOVERNANCE = "governance"  # principals the vault's access policy names may change or bypass it
    COMPLIANCE = "compliance"  # changeable only during its cooling-off period, then immutable


@dataclass(frozen=True)
class VaultLockRecord:
    """A vault's lock as the catalog stores it and ``vaults describe --json`` shows it; the rules it
    stands for are policy.lock.VaultLock's (``VaultLock.from_record``)."""

    mode: LockMode
    created_at: str
    min_retention_days: int | None = None
    max_retention_days: int | None = None
    changeable_for_days: int | None = None
    lock_date: str | None = None  # when a compliance lock becomes immutable

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "min_retention_days": self.min_retention_days,
            "max_retention_days": self.max_retention_days,
            "changeable_for_days": self.changeable_for_days,
            "created_at": self.created_at,
            "lock_date": self.lock_date,
        }


@dataclass
class VaultRecord:
    name: str
    arn: str
    store_url: str
    vault_id: str
    created_at: str
    access_policy: dict[str, Any] | None = None  # AWS-shaped policy document; None: the account's own only
    lock: VaultLockRecord | None = None  # None: unlocked
    managed: bool = False
    notifications: dict[str, Any] | None = None  # events, states, sealed sink URLs (services/notifications/)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup_vault_name": self.name,
            "backup_vault_arn": self.arn,
            "store_url": self.store_url,
            "vault_id": self.vault_id,
            "creation_date": self.created_at,
            "access_policy": self.access_policy,
            "lock": self.lock.as_dict() if self.lock else None,
            "managed_by_config": self.managed,
        }


def _duration(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


# Vault notifications (services/notifications/, docs/notifications.md).
# AWS Backup's vault event names; the S3_* ones are accepted so the blueprint's list pastes unchanged
# (Strongroom has no S3 resources, so they never fire).
NOTIFICATION_EVENTS = (
    "BACKUP_JOB_STARTED",
    "BACKUP_JOB_COMPLETED",
    "COPY_JOB_STARTED",
    "COPY_JOB_SUCCESSFUL",
    "COPY_JOB_FAILED",
    "RESTORE_JOB_STARTED",
    "RESTORE_JOB_COMPLETED",
    "RESTORE_JOB_FAILED",  # a restore test that did not succeed (docs/restore-testing.md)
    "RESTORE_VALIDATION_COMPLETED",  # a restore test's validation ended (Strongroom's; AWS tells it by EventBridge)
    "RECOVERY_POINT_MODIFIED",
    "S3_BACKUP_OBJECT_FAILED",
    "S3_RESTORE_OBJECT_FAILED",
    "RESOURCE_COMPLIANCE_CHANGED",  # Strongroom's: a control's verdict on a resource changed (docs/compliance.md)
)
COMPLIANCE_STATES = ("COMPLIANT", "NON_COMPLIANT")
# The ``state`` an event carries: a job's state, or a recovery point's status for RECOVERY_POINT_MODIFIED.
# (SUCCESSFUL, SKIPPED, TIMED_OUT: a restore test's validation status, docs/restore-testing.md)
NOTIFICATION_STATES = tuple(
    dict.fromkeys(
        [
            *(s.value for s in JobState),
            *(s.value for s in RecoveryPointStatus),
            "SUCCESSFUL",
            "SKIPPED",
            "TIMED_OUT",
            *COMPLIANCE_STATES,
        ]
    )
)


class DeliveryStatus(StrEnum):
    PENDING = "PENDING"  # not delivered yet; retried with backoff
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"  # every attempt failed


@dataclass(frozen=True)
class OutboxRow:
    """One event for one sink (a row of ``notifications``); ``sink`` is the JSON ``{"display", "sealed"}``:
    the masked URL and the URL sealed with the account key. Times are UTC in one fixed format."""

    vault_name: str
    event: str
    payload: dict[str, Any]
    sink: str
    next_attempt_at: str
    created_at: str
    id: int = 0  # 0 until the catalog stored it
    attempts: int = 0
    delivered_at: str | None = None
    last_error: str | None = None

    def status(self, max_attempts: int) -> DeliveryStatus:
        if self.delivered_at:
            return DeliveryStatus.DELIVERED
        return DeliveryStatus.FAILED if self.attempts >= max_attempts else DeliveryStatus.PENDING
