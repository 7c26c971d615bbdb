"""An attacker who can write the destination's catalog.db (and nothing else) tries to grant itself access,
lift the vault lock, shorten retention, or hide points by putting back an older catalog.

The accounts are the policy matrix's (tests/e2e/test_policy_matrix.py): a source, a destination serving
its API on loopback with the blueprint's policy (the destination's root and ``admin`` named), a lock,
and a copy of the source's backup kept 30 days. Every case builds its own: each one damages the catalog.
The attacker edits the file with sqlite3, as anyone with write access to it could.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from strongroom.errors import StrongroomError
from strongroom.policy.principals import root_arn
from tests.e2e.test_policy_matrix import ACTIONS, Accounts, World, _allow_everything, _build
from tests.support.accounts import account_id
from tests.support.cli import Cli, Result, assert_one_line_error

INTEGRITY_EXIT = 7


@pytest.fixture
def governance(tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        built = _build("governance", tmp_path / "accounts", stack)
        yield _world(built, tmp_path)


@pytest.fixture
def compliance(tmp_path: Path) -> Iterator[World]:
    with ExitStack() as stack:
        built = _build("compliance", tmp_path / "accounts", stack)
        yield _world(built, tmp_path)


def _world(built: Accounts, tmp_path: Path) -> World:
    return World(
        built.server,
        built.source,
        built.destination,
        built.clients,
        built.point_arn.rsplit(":", 1)[1],
        built.point_arn,
        built.tree,
        tmp_path,
    )


def _attack(cli: Cli, sql: str, *params: object) -> None:
    """What write access to catalog.db alone allows: any SQL at all."""
    with sqlite3.connect(cli.home / "catalog.db") as db:
        assert db.execute(sql, params).rowcount >= 1, sql
    db.close()


def _refused_for_integrity(world: World, caller: str, action: str) -> None:
    try:
        ACTIONS[action](world.clients[caller], world)
    except StrongroomError as exc:
        assert exc.code == "CATALOG_INTEGRITY", (action, exc.code, exc.message)
        return
    raise AssertionError(f"{caller} could {action} through the edited catalog")


def _point_still_kept(world: World, days: int = 30) -> None:
    """The copy is there, COMPLETED, its manifest in the vault (``days``: its retention in the catalog)."""
    stored = sqlite3.connect(world.destination.home / "catalog.db")
    status, kept = stored.execute(
        "SELECT status, delete_after_days FROM recovery_points WHERE id = ?", (world.point_id,)
    ).fetchone()
    stored.close()
    assert (status, kept) == ("COMPLETED", days)
    assert (world.destination.home / "vaults" / "Default" / "manifests" / world.point_id).exists()


def test_a_credential_rebound_to_the_root_principal_grants_nothing(governance: World) -> None:
    world = governance
    copier = world.clients["source"]
    root = root_arn(account_id(world.destination))
    _attack(
        world.destination, "UPDATE credentials SET principal_arn = ? WHERE key_id = ?", root, _key_id(world, "copier")
    )

    with pytest.raises(StrongroomError) as refused:
        copier.whoami()
    assert refused.value.code == "CATALOG_INTEGRITY"
    for action in ("remove lock", "delete recovery point", "change policy", "update lifecycle shorter"):
        _refused_for_integrity(world, "source", action)
    lock = world.destination.json("vaults", "describe", "Default")
    assert lock["locked"] and lock["lock_mode"] == "governance"
    _point_still_kept(world)


def test_a_new_credential_row_or_one_copied_from_another_key_is_refused(governance: World) -> None:
    world = governance
    admin = world.clients["admin"]
    # The admin credential's MAC onto the copier's row (same principal then): bound to its key id, it fails.
    _attack(
        world.destination,
        "UPDATE credentials SET principal_arn = (SELECT principal_arn FROM credentials "
        "WHERE key_id = ?), mac = (SELECT mac FROM credentials WHERE key_id = ?) WHERE key_id = ?",
        _key_id(world, "admin"),
        _key_id(world, "admin"),
        _key_id(world, "copier"),
    )
    _refused_for_integrity(world, "source", "delete recovery point")
    assert admin.whoami()["principal_arn"].endswith(":user/admin")  # the untouched row still works
    _point_still_kept(world)


@pytest.mark.parametrize("edit", ["lock removed", "lock made governance", "minimum lowered"])
def test_an_edited_lock_still_binds(compliance: World, edit: str) -> None:
    world = compliance
    raw = json.loads(_lock_column(world))
    if edit == "lock removed":
        _attack(world.destination, "UPDATE vaults SET lock = NULL WHERE name = 'Default'")
    else:
        raw.update({"changeable_for_days": None} if edit == "lock made governance" else {"min_retention_days": 1})
        _attack(world.destination, "UPDATE vaults SET lock = ? WHERE name = 'Default'", json.dumps(raw))

    for action in ("remove lock", "delete recovery point", "update lifecycle shorter"):
        _refused_for_integrity(world, "admin", action)
    for command in (
        ("recovery-points", "delete", world.point_arn),
        ("vaults", "delete-lock", "Default"),
        ("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "1"),
    ):
        _integrity_line(world.destination.run(*command, ok=False), "vault record 'Default'")
    _point_still_kept(world)


def test_an_edited_access_policy_is_refused(governance: World) -> None:
    world = governance
    _attack(
        world.destination, "UPDATE vaults SET access_policy = ? WHERE name = 'Default'", json.dumps(_allow_everything())
    )
    for caller in ("source", "operator"):
        for action in ("delete recovery point", "remove lock", "change policy", "copy out elsewhere"):
            _refused_for_integrity(world, caller, action)
    _point_still_kept(world)


def test_shortened_retention_is_neither_expired_nor_deletable(compliance: World) -> None:
    world = compliance
    _attack(
        world.destination,
        "UPDATE recovery_points SET delete_after_days = 1, delete_at = ? WHERE id = ?",
        (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        world.point_id,
    )
    _integrity_line(world.destination.run("lifecycle", "run", ok=False), world.point_id)
    _integrity_line(world.destination.run("recovery-points", "delete", world.point_arn, ok=False), world.point_id)
    _refused_for_integrity(world, "admin", "delete recovery point")
    _point_still_kept(world, days=1)  # the attacker's value, which nothing acted on


def test_a_rolled_back_catalog_is_found_by_verify_and_refused(governance: World) -> None:
    world = governance
    destination = world.destination
    older = world.tmp_path / "catalog-older.db"
    _copy_catalog(destination.home / "catalog.db", older)
    # After the copy: a second copy arrives, and the first one's retention is made longer.
    second = world.source.json(
        "copy",
        "start",
        "--recovery-point",
        world.source.backup("files")["recovery_point_arn"],
        "--destination-vault",
        _vault_arn(destination),
        "--delete-after",
        "30",
        "--wait",
    )
    second_id = second["result"]["destination_recovery_point_arn"].rsplit(":", 1)[1]
    destination.run("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "60")

    _copy_catalog(older, destination.home / "catalog.db")  # the attacker puts the older copy back

    found = destination.run("verify", ok=False)
    assert found.returncode == INTEGRITY_EXIT, found.stderr
    findings = [line for line in found.stdout.splitlines() if line.startswith("catalog ")]
    assert any("older than vault 'Default'" in line for line in findings), findings
    assert any(second_id in line and "missing from the catalog" in line for line in findings), findings
    assert any(world.point_id in line and "delete_after_days 30 (vault: 60)" in line for line in findings), findings
    # Nothing relies on it: the rolled-back retention (30 days) cannot be used to shorten or delete.
    _refused_for_integrity(world, "admin", "delete recovery point")
    _integrity_line(
        destination.run("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "31", ok=False),
        "older than vault 'Default'",
    )


def test_a_catalog_rolled_back_to_before_a_revocation_is_refused(governance: World) -> None:
    world = governance
    older = world.tmp_path / "catalog-older.db"
    _copy_catalog(world.destination.home / "catalog.db", older)
    world.destination.run("credentials", "revoke", _key_id(world, "operator"))
    _copy_catalog(older, world.destination.home / "catalog.db")  # the revocation undone, MACs all valid
    with pytest.raises(StrongroomError) as refused:
        world.clients["operator"].whoami()
    assert refused.value.code == "CATALOG_INTEGRITY" and "older than vault 'Default'" in refused.value.message


def test_trusting_a_catalog_put_back_on_purpose_keeps_every_older_copy_refused(governance: World) -> None:
    world = governance
    destination = world.destination
    oldest, older = world.tmp_path / "catalog-oldest.db", world.tmp_path / "catalog-older.db"
    _copy_catalog(destination.home / "catalog.db", oldest)
    destination.run("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "40")
    _copy_catalog(destination.home / "catalog.db", older)
    destination.run("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "50")
    destination.run("recovery-points", "update-lifecycle", world.point_arn, "--delete-after", "60")

    _copy_catalog(oldest, destination.home / "catalog.db")  # the operator puts an old catalog back on purpose
    assert destination.run("verify", ok=False).returncode == INTEGRITY_EXIT
    assert destination.json("verify", "--trust-catalog")["ok"]
    assert world.clients["admin"].whoami()
    # Numbered higher than the catalog trusted, yet older than that moment: still refused.
    _copy_catalog(older, destination.home / "catalog.db")
    found = destination.run("verify", ok=False)
    assert found.returncode == INTEGRITY_EXIT and "older than vault 'Default'" in found.stdout, found.stdout


def test_points_missing_from_the_catalog_or_the_vault_are_found_by_verify(governance: World) -> None:
    world = governance
    destination = world.destination
    assert destination.json("verify")["ok"]
    _attack(destination, "DELETE FROM recovery_points WHERE id = ?", world.point_id)
    found = destination.run("verify", ok=False)
    assert found.returncode == INTEGRITY_EXIT
    assert (
        f"catalog recovery point {world.point_id} is recorded in vault 'Default' (COMPLETED) but missing "
        "from the catalog" in found.stdout
    ), found.stdout

    # The other way round: the source's own point is in its catalog, its manifest gone from the vault.
    source_point = world.source.json("recovery-points", "list")["recovery_points"][0]
    source_id = source_point["recovery_point_arn"].rsplit(":", 1)[1]
    (world.source.home / "vaults" / "Default" / "manifests" / source_id).unlink()
    found = world.source.run("verify", ok=False)
    assert found.returncode == INTEGRITY_EXIT
    assert (
        f"{source_point['recovery_point_arn']} is COMPLETED in the catalog but vault 'Default' holds no "
        "manifest" in found.stdout
    ), found.stdout


def test_listings_without_the_passphrase_still_work(governance: World) -> None:
    """Showing the catalog never needed the passphrase and still does not (nothing is decided on it)."""
    bare = Cli(world_home(governance), passphrase=None)
    assert [p["recovery_point_arn"] for p in bare.json("recovery-points", "list")["recovery_points"]] == [
        governance.point_arn
    ]
    assert bare.json("vaults", "describe", "Default")["locked"]
    assert len(bare.json("credentials", "list")["credentials"]) == 3
    # A change needs the key, so the passphrase: without it one clear line, nothing changed.
    assert_one_line_error(bare.run("vaults", "delete-lock", "Default", ok=False), 3, "no passphrase given")


def test_an_older_catalog_is_signed_once_then_a_missing_mac_is_refused(governance: World) -> None:
    destination = governance.destination
    # A catalog from before row MACs: no MACs, no marker that it was ever signed.
    _attack(destination, "UPDATE recovery_points SET mac = NULL")
    _attack(destination, "UPDATE vaults SET mac = NULL")
    _attack(destination, "UPDATE credentials SET mac = NULL")
    (destination.home / "keys" / "catalog.sealed").unlink()
    assert destination.json("verify")["ok"]  # the upgrade trusts the catalog as it is at that moment
    assert (destination.home / "keys" / "catalog.sealed").exists()
    assert governance.clients["admin"].whoami()

    _attack(destination, "UPDATE vaults SET mac = NULL")  # now a MAC taken away is an edit like any other
    _integrity_line(destination.run("recovery-points", "delete", governance.point_arn, ok=False), "has no MAC")
    _point_still_kept(governance)


# helpers ---------------------------------------------------------------------------------------------
def world_home(world: World) -> Path:
    return world.destination.home


def _key_id(world: World, user: str) -> str:
    with sqlite3.connect(world.destination.home / "catalog.db") as db:
        [(key_id,)] = db.execute("SELECT key_id FROM credentials WHERE principal_arn LIKE ?", (f"%:user/{user}",))
    db.close()
    return str(key_id)


def _lock_column(world: World) -> str:
    with sqlite3.connect(world.destination.home / "catalog.db") as db:
        value = db.execute("SELECT lock FROM vaults WHERE name = 'Default'").fetchone()[0]
    db.close()
    return str(value)


def _vault_arn(cli: Cli) -> str:
    return str(cli.json("vaults", "describe", "Default")["backup_vault_arn"])


def _copy_catalog(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (WAL included), into a new file or over the live one."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _integrity_line(result: Result, *fragments: str) -> None:
    assert_one_line_error(result, INTEGRITY_EXIT, *fragments)
