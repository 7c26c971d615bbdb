"""The catalog state and the moment an evaluation reads: taken once, so every control sees the same account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from strongroom.model import Job, JobType, RecoveryPoint, RecoveryPointStatus, Resource, VaultRecord
from strongroom.plans.records import BackupPlan
from strongroom.policy.controls import Framework
from strongroom.services.account import SETTING_FRAMEWORKS, Account
from strongroom.services.metrics import Measured, last_copies, last_rto
from strongroom.services.scheduler.views import applied_plans


@dataclass(frozen=True)
class CatalogSnapshot:
    now: datetime
    account_id: str
    region: str
    resources: tuple[Resource, ...]
    vaults: dict[str, VaultRecord]
    points: tuple[RecoveryPoint, ...]  # COMPLETED ones
    jobs: tuple[Job, ...]  # copy and restore jobs
    plans: dict[str, BackupPlan]
    frameworks: dict[str, Framework]
    copies: dict[tuple[str, str, str], Job]  # (resource, account, vault) -> newest COMPLETED pushed copy
    rto: dict[str, Measured]  # resource -> its last measured restore (restore job, restore test, DR run)

    def completed_points(self, resource_id: str) -> list[RecoveryPoint]:
        """The resource's COMPLETED points in this account's vaults, newest (by completion) last."""
        found = [
            p
            for p in self.points
            if p.resource_id == resource_id and p.status == RecoveryPointStatus.COMPLETED and p.completion_date
        ]
        return sorted(found, key=lambda p: p.completion_date or "")


def applied_frameworks(account: Account) -> dict[str, Framework]:
    stored = account.catalog.get_setting(SETTING_FRAMEWORKS, {}) or {}
    return {name: Framework.of(name, data) for name, data in stored.items()}


def take_snapshot(account: Account, now: datetime) -> CatalogSnapshot:
    catalog = account.catalog
    # Only what the controls read: COMPLETED points, copy and restore jobs (a backup job proves nothing a point
    # does not), so an evaluation stays cheap on a catalog of many expired points and jobs.
    jobs = tuple(catalog.list_jobs(job_type=JobType.COPY)) + tuple(catalog.list_jobs(job_type=JobType.RESTORE))
    return CatalogSnapshot(
        now=now,
        account_id=account.account_id,
        region=account.region,
        resources=tuple(catalog.list_resources()),
        vaults={v.name: v for v in catalog.list_vaults()},
        points=tuple(catalog.list_recovery_points(status=RecoveryPointStatus.COMPLETED)),
        jobs=jobs,
        plans=applied_plans(account),
        frameworks=applied_frameworks(account),
        copies=last_copies(jobs),
        rto=last_rto(account, jobs),
    )
