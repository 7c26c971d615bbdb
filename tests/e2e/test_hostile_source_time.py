"""A compromised source lies about time: the destination takes it from its own clock.

The attacker holds the source's home and its destination credential. It signs its own copy-in
requests (the real protocol, over HTTP, to a real ``strongroom serve``) and announces whatever creation
date it likes. The destination's vault is under a compliance lock (7 to 365 days). Neither a future
date (kept longer than the lock's maximum, picked by every DR ``latest``) nor a past one (already
"expired", deletable at once; slipped under a DR ``at_or_before``) may work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import RemoteError
from strongroom.transport.client import AccountClient
from tests.e2e.test_copy import make_files
from tests.support.accounts import (
    Server,
    account_id,
    issue_credential,
    register,
    serving,
    source_and_destination,
    vault_arn,
)
from tests.support.cli import Cli, assert_one_line_error, edit_catalog_as_owner
from tests.support.hostile import stolen_announcement

MIN_DAYS, MAX_DAYS = 7, 365


@dataclass
class Hostile:
    source: Cli
    destination: Cli
    server: Server
    attacker: AccountClient  # signed with the source's own destination credential
    source_point: str
    tmp_path: Path

    def forge_copy(self, creation_date: str, delete_after_days: int) -> dict[str, Any]:
        """A whole copy-in session as the attacker runs it: announce, commit (an empty stream)."""
        announce = stolen_announcement(self.attacker, self.source, self.source_point, creation_date, delete_after_days)
        session = self.attacker.start_copy_in("Default", announce)["copy_job_id"]
        return dict(self.attacker.commit_copy_in(session))

    def copy_for_real(self) -> str:
        point = self.source.backup("files")["recovery_point_arn"]
        job = self.source.json(
            "copy",
            "start",
            "--recovery-point",
            point,
            "--destination-vault",
            vault_arn(self.destination),
            "--delete-after",
            "30",
            "--wait",
        )
        assert job["state"] == "COMPLETED", job
        return str(job["result"]["destination_recovery_point_arn"])

    def point(self, arn: str) -> dict[str, Any]:
        return dict(self.destination.json("recovery-points", "describe", "--recovery-point", arn))

    def dr_selects(self, at_or_before: str = "") -> str:
        """The point a DR run in the destination would restore (its dry run, a select step only)."""
        runbook = self.tmp_path / "select.yaml"
        runbook.write_text(
            json.dumps(
                {
                    "runbook": "pick",
                    "steps": [
                        {
                            "name": "select",
                            "type": "select_recovery_point",
                            "resource": "files",
                            "vault": "Default",
                            "at_or_before": at_or_before,
                        }
                    ],
                }
            )
        )
        plan = self.destination.json("dr", "run", str(runbook), "--dry-run")
        [step] = plan["steps"]
        assert not step["problems"], step
        return str(step["outputs"]["recovery_point_arn"]) if "outputs" in step else str(step["action"])


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Hostile]:
    source, destination = source_and_destination(tmp_path)
    destination.run(
        "vaults",
        "put-lock",
        "Default",
        "--min-retention-days",
        str(MIN_DAYS),
        "--max-retention-days",
        str(MAX_DAYS),
        "--changeable-for-days",
        "3",
    )
    make_files(tmp_path / "tree", count=3, size=50_000)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    with serving(destination) as server:
        credential = issue_credential(destination, "copier", "--account-id", account_id(source))
        register(source, "destination", server, credential)
        attacker = AccountClient(server.endpoint, credential["access_key_id"], credential["secret_access_key"])
        point = source.backup("files")["recovery_point_arn"]
        try:
            yield Hostile(source, destination, server, attacker, point, tmp_path)
        finally:
            attacker.close()


def _at(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_a_copy_from_the_future_is_refused_and_keeps_nothing(hostile: Hostile) -> None:
    with pytest.raises(RemoteError, match="cannot come from the future"):
        hostile.forge_copy("2099-01-01T00:00:00+00:00", MAX_DAYS)
    with pytest.raises(RemoteError, match="cannot come from the future"):
        hostile.forge_copy("9999-12-31T23:59:59", MAX_DAYS)  # naive, and at the end of the calendar: a 400, no 500
    points = hostile.destination.json("recovery-points", "list", "--all")["recovery_points"]
    assert not [p for p in points if p["status"] in ("COMPLETED", "CREATING")], points


def test_retention_ends_within_the_lock_bounds_counted_from_arrival(hostile: Hostile) -> None:
    """Within the clock skew a date ahead is accepted, as information: retention counts from arrival."""
    before = datetime.now(UTC)
    ahead = hostile.forge_copy((before + timedelta(minutes=4)).isoformat(), MAX_DAYS)
    after = datetime.now(UTC)
    point = hostile.point(ahead["recovery_point_arn"])
    assert point["status"] == "COMPLETED"
    assert _at(point["creation_date"]) == before + timedelta(minutes=4)  # kept as the source said
    assert before <= _at(point["arrival_date"]) <= after
    assert _at(point["calculated_lifecycle"]["delete_at"]) <= after + timedelta(days=MAX_DAYS)


def test_a_backdated_copy_cannot_escape_the_lock_minimum(hostile: Hostile) -> None:
    before = datetime.now(UTC)
    old = hostile.forge_copy("2000-01-01T00:00:00+00:00", MIN_DAYS)["recovery_point_arn"]
    point = hostile.point(old)
    assert point["creation_date"].startswith("2000-01-01")
    assert _at(point["calculated_lifecycle"]["delete_at"]) >= before + timedelta(days=MIN_DAYS)

    # Not even the destination's own root may delete it, nor may the expiry sweep remove it.
    refused = hostile.destination.run("recovery-points", "delete", old, ok=False)
    assert_one_line_error(refused, 8, "compliance-mode lock")
    swept = hostile.destination.json("lifecycle", "run", "--no-gc")
    assert old not in swept["expired_recovery_points"]
    assert hostile.point(old)["status"] == "COMPLETED"


def test_dr_latest_ranks_by_the_destinations_clock(hostile: Hostile) -> None:
    """A point claiming a later creation date than the real copies is not what DR restores."""
    forged = hostile.forge_copy((datetime.now(UTC) + timedelta(minutes=4)).isoformat(), 30)["recovery_point_arn"]
    legitimate = hostile.copy_for_real()
    assert _at(hostile.point(forged)["creation_date"]) > _at(hostile.point(legitimate)["creation_date"])
    assert legitimate in hostile.dr_selects()
    assert forged not in hostile.dr_selects()


def test_dr_at_or_before_an_incident_skips_a_point_backdated_after_it(hostile: Hostile) -> None:
    """The incident's clean point stays the one chosen, whatever date the attacker writes on its own."""
    clean = hostile.copy_for_real()
    incident = datetime.now(UTC)
    backdated = (incident - timedelta(milliseconds=1)).isoformat()  # after the clean copy, before the incident
    forged = hostile.forge_copy(backdated, 30)["recovery_point_arn"]
    chosen = hostile.dr_selects(at_or_before=incident.isoformat())
    assert clean in chosen and forged not in chosen


def _set_creation_date(cli: Cli, arn: str, creation_date: str) -> None:
    """What a lying (compromised, or pre-fix) account's catalog says of one of its points: its owner (who
    holds its passphrase) edits the catalog and vouches for it."""
    edit_catalog_as_owner(cli, "UPDATE recovery_points SET creation_date = ? WHERE arn = ?", creation_date, arn)


def test_a_pull_takes_time_from_the_receiving_account_too(hostile: Hostile) -> None:
    """Copying back (CopyFromBackupVault) believes the other account's dates no more than a push does."""
    copied = hostile.copy_for_real()
    _set_creation_date(hostile.destination, copied, "2099-01-01T00:00:00+00:00")
    refused = hostile.source.run(
        "copy",
        "start",
        "--recovery-point",
        copied,
        "--destination-vault",
        vault_arn(hostile.source),
        "--delete-after",
        "3",
        "--wait",
        ok=False,
    )
    assert_one_line_error(refused, 9, "2099-01-01", "cannot come from the future")

    _set_creation_date(hostile.destination, copied, "2000-01-01T00:00:00+00:00")
    before = datetime.now(UTC)
    job = hostile.source.json(
        "copy",
        "start",
        "--recovery-point",
        copied,
        "--destination-vault",
        vault_arn(hostile.source),
        "--delete-after",
        "3",
        "--wait",
    )
    back = hostile.source.json(
        "recovery-points", "describe", "--recovery-point", job["result"]["destination_recovery_point_arn"]
    )
    assert back["creation_date"].startswith("2000-01-01")  # information
    assert _at(back["arrival_date"]) >= before
    assert _at(back["calculated_lifecycle"]["delete_at"]) >= before + timedelta(days=3)
    swept = hostile.source.json("lifecycle", "run", "--no-gc")
    assert back["recovery_point_arn"] not in swept["expired_recovery_points"]
