"""``strongroom vaults attach``: a vault outlives its home. The home is lost (or only catalog.db), the store stays;
a new home attaches the vault with one command and lists, verifies and restores exactly what the old one held.
Refused when another home wrote the vault recently (unless --force), idempotent, and a kill mid-attach is
completed by running it again."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from strongroom.clock import driven_clock, system_clock
from strongroom.errors import VaultInUseError
from strongroom.services import attach
from strongroom.services.account import init_account, open_account
from strongroom.store.base import open_store
from tests.support.accounts import account_id
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.trees import diff_snapshots, make_awkward_tree, snapshot_tree

OTHER_PASSPHRASE = "a new machine, a new passphrase"
# What a rebuilt catalog must show exactly as the lost one did.
COMPARED = (
    "recovery_point_id",
    "resource_id",
    "resource_type",
    "status",
    "creation_date",
    "arrival_date",
    "completion_date",
    "lifecycle",
    "calculated_lifecycle",
    "is_locked",
    "tags",
)

COPY_IN_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "AllowCopyIn",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:strongroom:iam::111122223333:root"},
            "Action": "backup:CopyIntoBackupVault",
            "Resource": "*",
        }
    ],
}


def _points(cli: Cli, vault: str) -> list[dict[str, Any]]:
    listed = cli.json("recovery-points", "list", "--vault", vault)["recovery_points"]
    return sorted(({k: p[k] for k in COMPARED} for p in listed), key=lambda p: p["recovery_point_id"])


def _make_sqlite(path: Path) -> list[tuple[int, str]]:
    rows = [(i, f"patient {i}") for i in range(500)]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)", rows)
    return rows


def _sqlite_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT id, name FROM t ORDER BY id"))


def _fill(cli: Cli, tmp_path: Path, vault: str) -> dict[str, Any]:
    """Back up a directory twice and a SQLite file into ``vault``; lock it, give it a policy and retention."""
    source = make_awkward_tree(tmp_path / "source", big_size=2 * 1024 * 1024 + 5)
    rows = _make_sqlite(tmp_path / "clinic.db")
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(source))
    cli.run("resources", "add", "clinic", "--type", "sqlite", "--path", str(tmp_path / "clinic.db"))
    cli.run("vaults", "put-lock", vault, "--min-retention-days", "1", "--max-retention-days", "400")
    first = cli.json("backup", "start", "--resource", "files", "--vault", vault, "--wait", "--delete-after", "30")
    (source / "added-later.txt").write_text("second point\n")
    files = cli.json(
        "backup", "start", "--resource", "files", "--vault", vault, "--wait", "--delete-after", "30",
        "--tag", "Environment=prod", "--tag", "team=mavis",
    )  # fmt: skip
    db = cli.json("backup", "start", "--resource", "clinic", "--vault", vault, "--wait", "--delete-after", "30")
    cli.run("recovery-points", "update-lifecycle", first["recovery_point_arn"], "--delete-after", "90")
    assert {first["state"], files["state"], db["state"]} == {"COMPLETED"}
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(COPY_IN_POLICY))
    cli.run("vaults", "put-access-policy", vault, "--file", str(policy))
    return {
        "tree": snapshot_tree(source),
        "rows": rows,
        "files_id": files["recovery_point_arn"].rsplit(":", 1)[1],
        "db_id": db["recovery_point_arn"].rsplit(":", 1)[1],
        "points": _points(cli, vault),
        "lock": _lock(cli, vault),
        "policy": cli.json("vaults", "get-access-policy", vault)["policy"],
    }


def _lock(cli: Cli, vault: str) -> dict[str, Any]:
    described = cli.json("vaults", "describe", vault)
    return {k: described[k] for k in ("locked", "lock_mode", "min_retention_days", "max_retention_days")}


def _check_restores(cli: Cli, tmp_path: Path, vault: str, before: dict[str, Any]) -> None:
    assert cli.json("verify", "--read-data")["ok"]
    listed = cli.json("recovery-points", "list", "--vault", vault)["recovery_points"]
    arns = {p["recovery_point_id"]: p["recovery_point_arn"] for p in listed}
    target = tmp_path / "restored-tree"
    cli.run("restore", "start", "--recovery-point", arns[before["files_id"]], "--target", str(target), "--wait")
    assert diff_snapshots(before["tree"], snapshot_tree(target)) == []
    db_target = tmp_path / "restored.db"
    cli.run("restore", "start", "--recovery-point", arns[before["db_id"]], "--target", str(db_target), "--wait")
    assert _sqlite_rows(db_target) == before["rows"]


def test_a_lost_home_s_local_vault_attaches_to_a_new_home_with_another_passphrase(tmp_path: Path) -> None:
    old = Cli(tmp_path / "old")
    old.run("init")
    before = _fill(old, tmp_path, "Default")
    kept = tmp_path / "kept-vault"
    shutil.move(old.home / "vaults" / "Default", kept)
    shutil.rmtree(old.home)  # the machine is gone; its vault directory survived elsewhere

    new = Cli(tmp_path / "new", passphrase=OTHER_PASSPHRASE)
    new.run("init")
    refused = new.run("vaults", "attach", "Rescued", "--store", kept.as_uri(), "--force", ok=False)
    assert_one_line_error(refused, 3, "wrong passphrase", "--vault-passphrase-file")
    (tmp_path / "vault-pass").write_text(PASSPHRASE + "\n")
    attached = new.json(
        "vaults", "attach", "Rescued", "--store", kept.as_uri(), "--vault-passphrase-file",
        str(tmp_path / "vault-pass"), "--force", "--json",
    )  # fmt: skip
    assert attached["outcome"] == "ATTACHED" and attached["keys_kept_in_home"]
    assert attached["recovery_points_by_status"] == {"COMPLETED": 3}
    assert attached["locked"] and attached["warnings"]  # the old ARN named another account

    assert _points(new, "Rescued") == before["points"]
    assert _lock(new, "Rescued") == before["lock"] and before["lock"]["locked"]
    # The lock came back with the vault and governs its points: shortening a retention is still refused.
    longest = max(before["points"], key=lambda p: p["lifecycle"]["delete_after_days"])["recovery_point_id"]
    shortened = new.run("recovery-points", "update-lifecycle", longest, "--delete-after", "30", ok=False)
    assert_one_line_error(shortened, 8, "forbids shortening")
    # The old passphrase went nowhere but through the file: no file of the new home holds it in clear.
    assert all(PASSPHRASE.encode() not in f.read_bytes() for f in new.home.rglob("*") if f.is_file())
    assert new.json("vaults", "get-access-policy", "Rescued")["policy"] == before["policy"] is not None
    _check_restores(new, tmp_path, "Rescued", before)


def test_a_lost_catalog_db_is_rebuilt_in_the_same_home(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    before = _fill(cli, tmp_path, "Default")
    for path in cli.home.glob("catalog.db*"):
        path.unlink()
    url = (cli.home / "vaults" / "Default").as_uri()
    attached = cli.json("vaults", "attach", "Default", "--store", url, "--json")  # same home: no --force needed
    assert attached["outcome"] == "ATTACHED" and not attached["keys_kept_in_home"]
    assert attached["original_backup_vault_arn"] == attached["backup_vault_arn"]  # same account, same ARNs
    assert _points(cli, "Default") == before["points"]
    _check_restores(cli, tmp_path, "Default", before)


def test_an_s3_vault_outlives_its_whole_home(tmp_path: Path, s3_server: S3Server) -> None:
    old = Cli(tmp_path / "old")
    old.env.update(S3_TEST_ENV)
    old.run("init")
    url = s3_server.new_store_url(object_lock=True, prefix="team/offsite")
    old.run("vaults", "create", "Offsite", "--store", url)
    before = _fill(old, tmp_path, "Offsite")
    stored = set(open_store(url).list(""))
    assert any(key.endswith(".pack") for key in stored) and not any(key.startswith("chunks/") for key in stored)
    shutil.rmtree(old.home)

    new = Cli(tmp_path / "new")
    new.env.update(S3_TEST_ENV)
    new.run("init")
    refused = new.run("vaults", "attach", "Offsite", "--store", url, ok=False)
    assert_one_line_error(refused, 8, "another home", "--force")
    assert [v["backup_vault_name"] for v in new.json("vaults", "list")["backup_vaults"]] == ["Default"]
    attached = new.json("vaults", "attach", "Offsite", "--store", url, "--force", "--json")
    assert attached["recovery_points_by_status"] == {"COMPLETED": 3} and not attached["keys_kept_in_home"]
    assert _points(new, "Offsite") == before["points"]
    _check_restores(new, tmp_path, "Offsite", before)
    # The new home now writes the vault: the old home's marker is replaced, so attaching it again elsewhere
    # is refused in the new home's name.
    third = Cli(tmp_path / "third")
    third.env.update(S3_TEST_ENV)
    third.run("init")
    again = third.run("vaults", "attach", "Offsite", "--store", url, ok=False)
    assert_one_line_error(again, 8, f"another home (account {account_id(new)},")


def test_a_home_that_stopped_writing_long_ago_is_not_live(tmp_path: Path) -> None:
    """The live-ness rule with the clock moved, not slept: refused within 24 hours, allowed after."""
    old = init_account(tmp_path / "old", PASSPHRASE)
    old.close()
    url = (tmp_path / "old" / "vaults" / "Default").as_uri()
    init_account(tmp_path / "new", PASSPHRASE).close()
    new = open_account(tmp_path / "new", lambda: PASSPHRASE)
    try:
        with pytest.raises(VaultInUseError):
            attach.attach_vault(new, "Old", url, clock=lambda: system_clock() + timedelta(hours=23))
        assert "Old" not in new.catalog.vault_names()
        with driven_clock(lambda: system_clock() + timedelta(hours=25)):
            result = attach.attach_vault(new, "Old", url)
        assert result.outcome == attach.AttachOutcome.ATTACHED
        assert result.previous_home is not None and result.previous_home.account_id == old.account_id
    finally:
        new.close()


def test_attaching_twice_gives_the_same_result(tmp_path: Path) -> None:
    old = Cli(tmp_path / "old")
    old.run("init")
    old.run("resources", "add", "files", "--type", "directory", "--path", str(make_awkward_tree(tmp_path / "s")))
    old.backup("files")
    url = (old.home / "vaults" / "Default").as_uri()
    new = Cli(tmp_path / "new")
    new.run("init")
    first = new.json("vaults", "attach", "Old", "--store", url, "--force", "--json")
    listing = _points(new, "Old")
    second = new.json("vaults", "attach", "Old", "--store", url, "--json")  # the marker names this home now
    assert first["outcome"] == "ATTACHED" and second["outcome"] == "ALREADY_ATTACHED"
    reported_once = ("outcome", "previous_home", "warnings", "original_backup_vault_arn")  # the old home's
    assert {k: v for k, v in first.items() if k not in reported_once} == {
        k: v for k, v in second.items() if k not in reported_once
    }
    assert second["original_backup_vault_arn"] == second["backup_vault_arn"]  # the vault records this account now
    assert _points(new, "Old") == listing
    assert new.json("verify")["ok"]
    other = new.run("vaults", "attach", "Again", "--store", url, ok=False)
    assert_one_line_error(other, 2, "already attached to this account as 'Old'")
    # The old home comes back (it was not dead after all): it may no longer write the vault's records, so its
    # backups are refused before they store anything, and the new home's view stays whole.
    refused = old.run("backup", "start", "--resource", "files", "--wait", ok=False)
    assert_one_line_error(refused, 8, "written by another home", "this home no longer writes it")
    assert new.json("verify")["ok"] and _points(new, "Old") == listing


@pytest.mark.parametrize("point", ["attach:before-catalog", "attach:after-catalog"])
def test_a_kill_mid_attach_is_completed_by_running_it_again(tmp_path: Path, point: str) -> None:
    old = Cli(tmp_path / "old")
    old.run("init")
    old.run("resources", "add", "files", "--type", "directory", "--path", str(make_awkward_tree(tmp_path / "s")))
    old.backup("files")
    before = _points(old, "Default")
    url = (old.home / "vaults" / "Default").as_uri()
    new = Cli(tmp_path / "new")
    new.run("init")
    kill = {"STRONGROOM_FAULT_KILL_AT": point}
    killed = new.run("vaults", "attach", "Old", "--store", url, "--force", ok=False, env=kill)
    assert killed.returncode == -9
    names = [v["backup_vault_name"] for v in new.json("vaults", "list")["backup_vaults"]]
    assert names == (["Default"] if point == "attach:before-catalog" else ["Default", "Old"])
    rerun = new.json("vaults", "attach", "Old", "--store", url, "--force", "--json")
    assert rerun["outcome"] == ("ATTACHED" if point == "attach:before-catalog" else "ALREADY_ATTACHED")
    assert _points(new, "Old") == before
    assert new.json("verify", "--read-data")["ok"]


def test_bad_input_is_one_line_and_attaches_nothing(tmp_path: Path) -> None:
    old = Cli(tmp_path / "old")
    old.run("init")
    vault_dir = old.home / "vaults" / "Default"
    new = Cli(tmp_path / "new")
    new.run("init")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(
        new.run("vaults", "attach", "X1", "--store", empty.as_uri(), ok=False), 2, "holds no Strongroom vault"
    )
    junk = tmp_path / "junk"
    (junk / "keys").mkdir(parents=True)
    (junk / "keys" / "k").write_text("{}")
    assert_one_line_error(
        new.run("vaults", "attach", "X2", "--store", junk.as_uri(), ok=False), 2, "holds no Strongroom vault"
    )
    assert_one_line_error(
        new.run("vaults", "attach", "Default", "--store", vault_dir.as_uri(), "--force", ok=False),
        2,
        "vault 'Default' already exists",
    )
    not_it = {"STRONGROOM_VAULT_PASSPHRASE": "not it"}
    wrong = new.run("vaults", "attach", "X3", "--store", vault_dir.as_uri(), "--force", ok=False, env=not_it)
    assert_one_line_error(wrong, 3, "wrong passphrase")
    newer = tmp_path / "newer"
    shutil.copytree(vault_dir, newer)
    key_file = next((newer / "keys").iterdir())
    document = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**document, "format": "strongroom-keyfile/9"}))
    assert_one_line_error(
        new.run("vaults", "attach", "X4", "--store", newer.as_uri(), "--force", ok=False), 7, "unknown key file format"
    )
    assert [v["backup_vault_name"] for v in new.json("vaults", "list")["backup_vaults"]] == ["Default"]


def test_a_forged_point_record_in_the_store_attaches_nothing(tmp_path: Path) -> None:
    """The store's owner (no keys) swaps one point's sealed record for another's, to hand the new home a
    shorter retention: the record is bound to its name, so attach refuses (exit 7) and records nothing."""
    old = Cli(tmp_path / "old")
    old.run("init")
    old.run("resources", "add", "files", "--type", "directory", "--path", str(make_awkward_tree(tmp_path / "s")))
    kept = old.json("backup", "start", "--resource", "files", "--wait", "--delete-after", "300")
    brief = old.json("backup", "start", "--resource", "files", "--wait", "--delete-after", "1")
    records = old.home / "vaults" / "Default" / "catalog" / "points"
    kept_id, brief_id = (job["recovery_point_arn"].rsplit(":", 1)[1] for job in (kept, brief))
    (records / kept_id).write_bytes((records / brief_id).read_bytes())
    new = Cli(tmp_path / "new")
    new.run("init")
    url = (old.home / "vaults" / "Default").as_uri()
    refused = new.run("vaults", "attach", "Old", "--store", url, "--force", ok=False)
    assert_one_line_error(refused, 7, f"catalog/points/{kept_id}")
    assert [v["backup_vault_name"] for v in new.json("vaults", "list")["backup_vaults"]] == ["Default"]
