"""Every destructive action against a destination vault, by every kind of caller, under both lock modes.

The destination serves its API on loopback; callers use signed requests (or none, or wrong ones).
Expected outcomes follow AWS Backup: explicit Deny wins, other accounts need an explicit Allow, a
governance lock yields only to principals the policy names, a compliance lock past its cooling-off
period yields to nobody. After every refusal nothing is lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from strongroom.errors import AccessDeniedError, AuthenticationError, StrongroomError, VaultLockedError
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn, user_arn
from strongroom.transport import wire
from strongroom.transport.client import AccountClient
from tests.e2e.test_copy import make_files
from tests.support.accounts import Server, account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import Cli, assert_one_line_error
from tests.support.trees import snapshot_tree

ALLOWED = None


@dataclass
class World:
    server: Server
    source: Cli
    destination: Cli
    clients: dict[str, AccountClient]
    point_id: str  # the copy in the destination
    point_arn: str
    tree: Path
    tmp_path: Path

    def assert_nothing_lost(self) -> None:
        described = self.destination.json("recovery-points", "describe", "--recovery-point", self.point_arn)
        assert described["status"] == "COMPLETED", described
        assert described["lifecycle"]["delete_after_days"] == 30
        assert self.destination.json("verify", "--read-data")["ok"]


def _client(server: Server, credential: dict[str, Any], secret: str | None = None) -> AccountClient:
    return AccountClient(server.endpoint, credential["access_key_id"], secret or credential["secret_access_key"])


@pytest.fixture(params=["governance", "compliance"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    source, destination = Cli(tmp_path / "source"), Cli(tmp_path / "destination")
    source.run("init")
    destination.run("init")
    source_id, destination_id = account_id(source), account_id(destination)
    admins = [root_arn(destination_id), user_arn(destination_id, "admin")]
    policy = default_destination_policy(source_account_ids=[source_id], source_vault_arns=[vault_arn(source)],
                                        admin_principal_arns=admins)
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    destination.run("vaults", "put-access-policy", "Default", "--file", str(tmp_path / "policy.json"))
    lock = ["--min-retention-days", "7", "--max-retention-days", "365"]
    if request.param == "compliance":
        lock += ["--changeable-for-days", "3"]
    destination.run("vaults", "put-lock", "Default", *lock)
    tree = tmp_path / "tree"
    make_files(tree, count=4)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    with serving(destination) as server:
        copier = issue_credential(destination, "copier", "--account-id", source_id)
        register(source, "destination", server, copier)
        point = source.backup("files")["recovery_point_arn"]
        job = source.json("copy", "start", "--recovery-point", point, "--destination-vault", vault_arn(destination),
                          "--delete-after", "30", "--wait")
        copied = job["result"]["destination_recovery_point_arn"]
        if request.param == "compliance":
            _cooling_off_passes(destination)
        clients = {
            "source": _client(server, copier),
            "admin": _client(server, issue_credential(destination, "admin")),
            "operator": _client(server, issue_credential(destination, "operator")),
            "wrong-signature": _client(server, copier, secret="A" * 40),
        }
        yield World(server, source, destination, clients, copied.rsplit(":", 1)[1], copied, tree, tmp_path)
        for client in clients.values():
            client.close()


def _cooling_off_passes(destination: Cli) -> None:
    """Four days pass for the lock (changeable for three): move its creation back in the catalog."""
    with sqlite3.connect(destination.home / "catalog.db") as db:
        raw = json.loads(db.execute("SELECT lock FROM vaults WHERE name = 'Default'").fetchone()[0])
        raw["created_at"] = (datetime.now(UTC) - timedelta(days=4)).isoformat()
        db.execute("UPDATE vaults SET lock = ? WHERE name = 'Default'", (json.dumps(raw),))


Action = Callable[[AccountClient, World], Any]

ACTIONS: dict[str, Action] = {
    "copy out elsewhere": lambda c, w: c.start_copy_out(
        w.point_id, vault_arn(w.source).replace(":backup-vault:Default", ":backup-vault:Elsewhere")),
    "delete vault": lambda c, w: c.delete_vault("Default"),
    "update lifecycle shorter": lambda c, w: c.update_recovery_point_lifecycle(w.point_id, 10),
    "change policy": lambda c, w: c.put_access_policy("Default", _allow_everything()),
    "delete recovery point": lambda c, w: c.delete_recovery_point(w.point_id),
    "remove lock": lambda c, w: c.delete_vault_lock("Default"),
}


def _allow_everything() -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "backup:*", "Resource": "*"}]}


def _attempt(world: World, caller: str, action: str) -> type[StrongroomError] | None:
    try:
        ACTIONS[action](world.clients[caller], world)
    except StrongroomError as exc:
        return type(exc)
    return ALLOWED


@pytest.mark.parametrize("caller", ["source", "operator", "wrong-signature"])
def test_callers_without_rights_destroy_nothing(world: World, caller: str) -> None:
    expected = AuthenticationError if caller == "wrong-signature" else AccessDeniedError
    for action in ACTIONS:
        assert _attempt(world, caller, action) is expected, (caller, action)
    world.assert_nothing_lost()


def test_unsigned_requests_are_refused(world: World) -> None:
    routes = [("DELETE", f"/v1/recovery-points/{world.point_id}"), ("DELETE", "/v1/vaults/Default/lock"),
              ("DELETE", "/v1/vaults/Default"), ("PUT", "/v1/vaults/Default/access-policy"),
              ("PUT", f"/v1/recovery-points/{world.point_id}/lifecycle"), ("GET", "/v1/vaults/Default")]
    for method, path in routes:
        answer = httpx.request(method, world.server.endpoint + path, json={"delete_after_days": 1})
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "AUTHENTICATION"
    world.assert_nothing_lost()


def test_named_administrator(world: World) -> None:
    compliance = world.destination.json("vaults", "describe", "Default")["lock"]["mode"] == "compliance"
    assert _attempt(world, "admin", "copy out elsewhere") is AccessDeniedError  # Deny for every principal
    assert _attempt(world, "admin", "delete vault") is not ALLOWED  # AWS: a vault holding points is never deleted
    if compliance:
        # Past the cooling-off period nobody may loosen the lock, delete early or shorten retention.
        for action in ("update lifecycle shorter", "delete recovery point", "remove lock"):
            assert _attempt(world, "admin", action) is VaultLockedError, action
        # The access policy is not part of the lock (as in AWS): opening it up still deletes nothing.
        assert _attempt(world, "admin", "change policy") is ALLOWED
        for caller in ("admin", "source", "operator"):
            assert _attempt(world, caller, "delete recovery point") is VaultLockedError
        locally = world.destination.run("recovery-points", "delete", world.point_arn, ok=False)
        assert_one_line_error(locally, 8, "lock")
        world.assert_nothing_lost()
    else:
        # Governance: the principals the policy names may bypass the lock.
        assert _attempt(world, "admin", "update lifecycle shorter") is ALLOWED
        assert _attempt(world, "admin", "delete recovery point") is ALLOWED
        point = world.destination.json("recovery-points", "describe", "--recovery-point", world.point_arn)
        assert point["status"] == "DELETED"
        assert _attempt(world, "admin", "remove lock") is ALLOWED
        assert _attempt(world, "admin", "change policy") is ALLOWED


def test_source_cannot_overwrite_what_the_destination_holds(world: World) -> None:
    """A source that re-sends known chunk ids with other bytes only creates new chunks; copies already
    stored keep theirs, byte for byte."""
    client = world.clients["source"]
    source_point = world.source.json("recovery-points", "list")["recovery_points"][0]
    announce = {
        "source_recovery_point_arn": source_point["recovery_point_arn"], "source_vault_arn": vault_arn(world.source),
        "source_vault_id": _source_vault_id(world), "resource_id": "files", "resource_type": "directory",
        "creation_date": datetime.now(UTC).isoformat(), "delete_after_days": 30, "metadata": {},
        "streams": {"tree": {"size": 0, "chunk_count": 0}},
    }
    session = client.start_copy_in("Default", announce)["copy_job_id"]
    known = _mapped_peer_ids(world)
    assert known and not any(client.missing(session, known))
    forged = b"forged" * 1000
    frames = b"".join(wire.encode_frame(i, len(forged), zstandard.compress(forged)) for i in known)
    client.put_chunks(session, frames)
    client.abort_copy_in(session, "test over")
    world.assert_nothing_lost()
    target = world.tmp_path / "restored"
    world.destination.run("restore", "start", "--recovery-point", world.point_arn, "--target", str(target), "--wait")
    assert snapshot_tree(target) == snapshot_tree(world.tree)


def test_retention_outside_the_lock_range_fails_the_copy(world: World) -> None:
    point = world.source.json("recovery-points", "list")["recovery_points"][0]["recovery_point_arn"]
    failed = world.source.run("copy", "start", "--recovery-point", point, "--destination-vault",
                              vault_arn(world.destination), "--delete-after", "2", "--wait", ok=False)
    assert_one_line_error(failed, 2, "2 days", "minimum retention of 7 days")


def _source_vault_id(world: World) -> str:
    return str(world.source.json("vaults", "describe", "Default")["vault_id"])


def _mapped_peer_ids(world: World) -> list[bytes]:
    with sqlite3.connect(world.destination.home / "catalog.db") as db:
        return [bytes(r[0]) for r in db.execute("SELECT peer_chunk_id FROM chunk_map LIMIT 5")]
