"""Recovery point tags through the real CLI and two accounts on loopback: a tagged backup, selection by
tags, a copy that carries them; and ``cold_storage_after``, refused rather than silently dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import RemoteError
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from strongroom.services.copy_sessions import CopyInRequest, _parse
from tests.e2e.test_copy import Pair, copy, two_accounts
from tests.support.accounts import account_id, issue_credential, register, vault_arn
from tests.support.cli import Cli, assert_one_line_error


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with two_accounts(tmp_path) as built:
        yield built


def tagged_backup(cli: Cli, *tags: str) -> str:
    options = [part for tag in tags for part in ("--tag", tag)]
    job = cli.json("backup", "start", "--resource", "files", "--wait", *options)
    assert job["state"] == "COMPLETED", job
    return str(job["result"]["recovery_point_arn"])


def listed(cli: Cli, *tags: str) -> list[str]:
    options = [part for tag in tags for part in ("--tag", tag)]
    return [p["recovery_point_arn"] for p in cli.json("recovery-points", "list", *options)["recovery_points"]]


def test_tags_select_points_and_travel_with_a_copy(pair: Pair) -> None:
    gold = tagged_backup(pair.source, "owner=mavis", "tier=gold")
    silver = tagged_backup(pair.source, "owner=mavis", "tier=silver")
    untagged = tagged_backup(pair.source)
    assert listed(pair.source) == [gold, silver, untagged]
    assert listed(pair.source, "owner=mavis") == [gold, silver]
    assert listed(pair.source, "owner=mavis", "tier=gold") == [gold]  # repeated: every tag must match
    assert listed(pair.source, "tier=bronze") == []
    described = pair.source.json("recovery-points", "describe", "--recovery-point", gold)
    assert described["tags"] == {"owner": "mavis", "tier": "gold"}
    assert pair.source.json("recovery-points", "describe", "--recovery-point", untagged)["tags"] == {}

    copied = copy(pair.source, gold, pair.destination_vault)["result"]["destination_recovery_point_arn"]
    plain = copy(pair.source, untagged, pair.destination_vault)["result"]["destination_recovery_point_arn"]
    there = pair.destination.json("recovery-points", "describe", "--recovery-point", copied)
    assert there["tags"] == {"owner": "mavis", "tier": "gold"}
    assert there["source_recovery_point_arn"] == gold
    assert pair.destination.json("recovery-points", "describe", "--recovery-point", plain)["tags"] == {}
    assert listed(pair.destination, "tier=gold") == [copied]


def test_a_copy_back_keeps_the_tags(pair: Pair) -> None:
    point = tagged_backup(pair.source, "owner=mavis")
    copied = copy(pair.source, point, pair.destination_vault)["result"]["destination_recovery_point_arn"]
    fresh = Cli(pair.tmp_path / "new-source")  # the lost source's replacement pulls the copy back
    fresh.run("init")
    fresh_id = account_id(fresh)
    policy = default_destination_policy(
        source_account_ids=[fresh_id],
        source_vault_arns=[vault_arn(fresh)],
        admin_principal_arns=[root_arn(account_id(pair.destination))],
    )
    (pair.tmp_path / "policy2.json").write_text(json.dumps(policy))
    pair.destination.run("vaults", "put-access-policy", "Default", "--file", str(pair.tmp_path / "policy2.json"))
    register(fresh, "destination", pair.server, issue_credential(pair.destination, "back", "--account-id", fresh_id))
    back = copy(fresh, copied, vault_arn(fresh))["result"]["destination_recovery_point_arn"]
    assert fresh.json("recovery-points", "describe", "--recovery-point", back)["tags"] == {"owner": "mavis"}
    assert listed(fresh, "owner=mavis") == [back]


def test_a_malformed_tag_option_is_one_line(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    failed = cli.run("recovery-points", "list", "--tag", "owner", ok=False)
    assert_one_line_error(failed, 2, "--tag 'owner' is not KEY=VALUE")


def test_a_copy_source_cannot_store_unbounded_or_reserved_tags() -> None:
    """A source (or a thief with its key) announcing a copy cannot make the destination keep arbitrary
    amounts of tag data, tags in the reserved ``aws:`` namespace, or terminal escape sequences that
    ``recovery-points describe`` would print."""
    announce = {
        "source_recovery_point_arn": "arn:strongroom:backup:local:111111111111:recovery-point:x",
        "source_vault_arn": "arn:strongroom:backup:local:111111111111:backup-vault:Default",
        "source_vault_id": "v",
        "resource_id": "files",
        "resource_type": "directory",
        "creation_date": "2031-01-01T00:00:00+00:00",
        "streams": {},
    }
    assert _parse(CopyInRequest, {**announce, "tags": {"owner": "mavis"}}).tags == {"owner": "mavis"}
    for tags in ({f"k{n}": "v" for n in range(51)}, {"aws:backup": "x"}, {"owner": "v" * 257}, {"owner": "\x1b[2J"}):
        with pytest.raises(RemoteError, match="malformed request: tags"):
            _parse(CopyInRequest, {**announce, "tags": tags})


COLD = """
backup_plans:
  daily:
    selection_tag: backup
    rules:
      - name: nightly
        schedule: cron(0 1 * * ? *)
        lifecycle: {delete_after: 365, cold_storage_after: 30}
"""


def test_cold_storage_after_is_refused_by_plan_and_apply(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    config = tmp_path / "account.yaml"
    config.write_text(COLD)
    for command in (("plan", "-f", str(config)), ("apply", "-f", str(config), "--auto-approve")):
        failed = cli.run(*command, ok=False)
        assert_one_line_error(
            failed, 2, "rule 'nightly': cold_storage_after is not supported yet", "remove it", "delete_after"
        )
    assert "nightly" not in cli.run("plans", "list", "--json").stdout  # nothing half-applied
