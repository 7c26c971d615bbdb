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
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from strongroom.errors import (
    AccessDeniedError,
    AuthenticationError,
    IntegrityError,
    StrongroomError,
    VaultLockedError,
)
from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn, user_arn
from strongroom.transport import wire
from strongroom.transport.client import AccountClient
from tests.e2e.test_copy import make_files
from tests.support.accounts import Server, account_id, issue_credential, register, serving, vault_arn
from tests.support.cli import Cli, assert_one_line_error, edit_catalog_as_owner
from tests.support.trees import snapshot_tree

# One worker runs the whole module: each lock mode's accounts are built once (``builds`` starts every mode
# the session selected, so a second worker would build them all again).
pytestmark = pytest.mark.xdist_group("policy_matrix")

ALLOWED = None
MODES = ["governance", "compliance"]


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


@pytest.fixture(scope="module")
def builds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    """Each lock mode's accounts, built once for the module; the modes the selected cases use are built at
    the same time (building is mostly waiting for ``strongroom`` processes): the compliance accounts get
    ready while the governance cases run."""
    with ExitStack() as stack, ThreadPoolExecutor(len(MODES), thread_name_prefix="policy-matrix") as pool:
        started = Builds(tmp_path_factory, pool, stack)
        for item in request.session.items:
            mode = getattr(item, "callspec", None) and item.callspec.params.get("accounts")
            if getattr(item, "module", None) is request.module and mode in MODES:
                started.start(mode)
        yield started
    # The pool has waited for every build, then every server stopped (a failed build's too) with the stack.


@pytest.fixture(scope="module", params=MODES)
def accounts(request: pytest.FixtureRequest, builds: Builds) -> Accounts:
    return builds.get(request.param)


@pytest.fixture
def world(accounts: Accounts, tmp_path: Path) -> World:
    """The case's view of its lock mode's accounts, the destination put back as built first: whatever an
    earlier case changed (policy, lock, the copy's retention or the copy itself) is undone."""
    accounts.restore()
    point_id = accounts.point_arn.rsplit(":", 1)[1]
    return World(
        accounts.server,
        accounts.source,
        accounts.destination,
        accounts.clients,
        point_id,
        accounts.point_arn,
        accounts.tree,
        tmp_path,
    )


def _cooling_off_passes(destination: Cli) -> None:
    """Four days pass for the lock (changeable for three): move its creation back in the catalog."""
    with sqlite3.connect(destination.home / "catalog.db") as db:
        raw = json.loads(db.execute("SELECT lock FROM vaults WHERE name = 'Default'").fetchone()[0])
        raw["created_at"] = (datetime.now(UTC) - timedelta(days=4)).isoformat()
    db.close()
    edit_catalog_as_owner(destination, "UPDATE vaults SET lock = ? WHERE name = 'Default'", json.dumps(raw))


Action = Callable[[AccountClient, World], Any]

ACTIONS: dict[str, Action] = {
    "copy out elsewhere": lambda c, w: c.start_copy_out(
        w.point_id, vault_arn(w.source).replace(":backup-vault:Default", ":backup-vault:Elsewhere")
    ),
    "delete vault": lambda c, w: c.delete_vault("Default"),
    "update lifecycle shorter": lambda c, w: c.update_recovery_point_lifecycle(w.point_id, 10),
    "change policy": lambda c, w: c.put_access_policy("Default", _allow_everything()),
    "delete recovery point": lambda c, w: c.delete_recovery_point(w.point_id),
    "remove lock": lambda c, w: c.delete_vault_lock("Default"),
}


def _allow_everything() -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "backup:*", "Resource": "*"}],
    }


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
    routes = [
        ("DELETE", f"/v1/recovery-points/{world.point_id}"),
        ("DELETE", "/v1/vaults/Default/lock"),
        ("DELETE", "/v1/vaults/Default"),
        ("PUT", "/v1/vaults/Default/access-policy"),
        ("PUT", f"/v1/recovery-points/{world.point_id}/lifecycle"),
        ("GET", "/v1/vaults/Default"),
    ]
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
    """A source that re-sends known chunk ids with other bytes is refused (tests/e2e/test_copy_poisoning.py
    for what later copies get); copies already stored keep theirs, byte for byte."""
    client = world.clients["source"]
    source_point = world.source.json("recovery-points", "list")["recovery_points"][0]
    announce = {
        "source_recovery_point_arn": source_point["recovery_point_arn"],
        "source_vault_arn": vault_arn(world.source),
        "source_vault_id": _source_vault_id(world),
        "resource_id": "files",
        "resource_type": "directory",
        "creation_date": datetime.now(UTC).isoformat(),
        "delete_after_days": 30,
        "metadata": {},
        "streams": {"tree": {"size": 0, "chunk_count": 0}},
        "source_chunk_id_key": _source_id_key(world),
    }
    session = client.start_copy_in("Default", announce)["copy_job_id"]
    known = _mapped_peer_ids(world)
    assert known and not any(client.missing(session, known))
    forged = b"forged" * 1000
    frames = b"".join(wire.encode_frame(i, len(forged), zstandard.compress(forged)) for i in known)
    with pytest.raises(IntegrityError, match="not the content that id names"):
        client.put_chunks(session, frames)
    world.assert_nothing_lost()
    target = world.tmp_path / "restored"
    world.destination.run("restore", "start", "--recovery-point", world.point_arn, "--target", str(target), "--wait")
    assert snapshot_tree(target) == snapshot_tree(world.tree)


def test_retention_outside_the_lock_range_fails_the_copy(world: World) -> None:
    point = world.source.json("recovery-points", "list")["recovery_points"][0]["recovery_point_arn"]
    failed = world.source.run(
        "copy",
        "start",
        "--recovery-point",
        point,
        "--destination-vault",
        vault_arn(world.destination),
        "--delete-after",
        "2",
        "--wait",
        ok=False,
    )
    assert_one_line_error(failed, 2, "2 days", "minimum retention of 7 days")


def _source_vault_id(world: World) -> str:
    return str(world.source.json("vaults", "describe", "Default")["vault_id"])


def _source_id_key(world: World) -> str:
    """The source vault's chunk-id key, as the source's own passphrase unlocks it."""
    import base64

    from strongroom.services.account import open_account
    from tests.support.cli import PASSPHRASE

    account = open_account(world.source.home, lambda: PASSPHRASE)
    try:
        return base64.b64encode(account.vault().keys.id_key).decode()
    finally:
        account.catalog.close()


def _mapped_peer_ids(world: World) -> list[bytes]:
    with sqlite3.connect(world.destination.home / "catalog.db") as db:
        return [bytes(r[0]) for r in db.execute("SELECT peer_chunk_id FROM chunk_map LIMIT 5")]


@dataclass
class Accounts:
    """A source and a destination account for one lock mode, shared by the module's cases.

    The state the cases may change is the destination's Default vault: its access policy, its lock and
    the copy it holds. ``restore`` compares them with how they were left the last time it ran (over
    HTTP, as the named administrator: a read costs no process) and puts back what differs with the
    same commands that built them, as the account's root; so cases stay independent in any order.
    """

    mode: str
    server: Server
    source: Cli
    destination: Cli
    clients: dict[str, AccountClient]
    tree: Path
    policy_file: Path
    lock: list[str]
    source_point: str
    destination_vault: str
    point_arn: str = ""
    _vault: dict[str, Any] | None = None  # access policy and lock as restore last left them
    _point: dict[str, Any] | None = None  # the copy as restore last left it

    def restore(self) -> None:
        vault, point = self._observe()
        known_vault, known_point = self._vault or {}, self._point or {}
        if vault is None or vault["access_policy"] != known_vault.get("access_policy"):
            self.destination.run("vaults", "put-access-policy", "Default", "--file", str(self.policy_file))
            if vault is None and self.point_arn:  # the policy hid the rest from the administrator: look again
                vault, point = self._observe()
        relock = vault is None or vault["lock"] != known_vault.get("lock")
        if relock:
            self.destination.run("vaults", "put-lock", "Default", *self.lock)
        if point is None or point != known_point:
            job = self.source.json(
                "copy",
                "start",
                "--recovery-point",
                self.source_point,
                "--destination-vault",
                self.destination_vault,
                "--delete-after",
                "30",
                "--wait",
            )
            self.point_arn = job["result"]["destination_recovery_point_arn"]
        if relock and self.mode == "compliance":
            _cooling_off_passes(self.destination)
        if vault != known_vault or point != known_point:
            self._vault, self._point = self._observe()
            assert self._vault is not None and self._point is not None, "the destination cannot be put back"
            assert self._vault["lock"]["mode"] == self.mode, self._vault
            assert self._point["status"] == "COMPLETED" and self._point["is_locked"], self._point
            assert self._point["lifecycle"]["delete_after_days"] == 30, self._point

    def _observe(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if not self.point_arn:
            return None, None
        admin = self.clients["admin"]
        try:
            described = admin.describe_vault("Default")
            point = admin.get_recovery_point(self.point_arn.rsplit(":", 1)[1])
        except StrongroomError:  # the policy no longer lets the administrator look: put everything back
            return None, None
        return {"access_policy": described["access_policy"], "lock": described["lock"]}, point


class Builds:
    """Builds of the modes' accounts, each started once, in the pool; servers stop as ``stack`` closes."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, pool: ThreadPoolExecutor, stack: ExitStack) -> None:
        self.tmp_path_factory, self.pool, self.stack = tmp_path_factory, pool, stack
        self.futures: dict[str, Future[Accounts]] = {}

    def start(self, mode: str) -> None:
        if mode not in self.futures:
            home = self.tmp_path_factory.mktemp(f"policy-{mode}")
            self.futures[mode] = self.pool.submit(_build, mode, home, self.stack.enter_context(ExitStack()))

    def get(self, mode: str) -> Accounts:
        self.start(mode)
        return self.futures[mode].result()


def _build(mode: str, tmp_path: Path, stack: ExitStack) -> Accounts:
    """The source and destination accounts of one lock mode, as each case used to build its own: the
    destination serves its API (until ``stack`` closes) and holds a copy of the source's backup."""
    source, destination = Cli(tmp_path / "source"), Cli(tmp_path / "destination")
    source.run("init")
    destination.run("init")
    source_id, destination_id = account_id(source), account_id(destination)
    admins = [root_arn(destination_id), user_arn(destination_id, "admin")]
    policy = default_destination_policy(
        source_account_ids=[source_id], source_vault_arns=[vault_arn(source)], admin_principal_arns=admins
    )
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    lock = ["--min-retention-days", "7", "--max-retention-days", "365"]
    if mode == "compliance":
        lock += ["--changeable-for-days", "3"]
    tree = tmp_path / "tree"
    make_files(tree, count=4)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    server = stack.enter_context(serving(destination))
    copier = issue_credential(destination, "copier", "--account-id", source_id)
    register(source, "destination", server, copier)
    clients = {
        "source": _client(server, copier),
        "admin": _client(server, issue_credential(destination, "admin")),
        "operator": _client(server, issue_credential(destination, "operator")),
        "wrong-signature": _client(server, copier, secret="A" * 40),
    }
    for client in clients.values():
        stack.callback(client.close)
    built = Accounts(
        mode,
        server,
        source,
        destination,
        clients,
        tree,
        tmp_path / "policy.json",
        lock,
        source_point=source.backup("files")["recovery_point_arn"],
        destination_vault=vault_arn(destination),
    )
    built.restore()  # the policy, the lock, the copy and, in compliance mode, the cooling-off period passes
    return built
