"""Copies between two accounts that talk only through `strongroom serve` on loopback."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from strongroom.policy.document import default_destination_policy
from strongroom.policy.principals import root_arn
from tests.support.accounts import (
    Server,
    account_id,
    issue_credential,
    register,
    self_signed_certificate,
    serving,
    source_and_destination,
    vault_arn,
)
from tests.support.cli import Cli, assert_one_line_error, edit_catalog_as_owner
from tests.support.trees import snapshot_tree


def make_files(root: Path, count: int = 12, size: int = 400_000, seed: int = 5) -> None:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for n in range(count):
        (root / f"f{n:02}.bin").write_bytes(rng.randbytes(size))


class Pair:
    """A source and a destination account; the destination serves its API and trusts the source."""

    def __init__(self, tmp_path: Path, server: Server, source: Cli, destination: Cli, tree: Path) -> None:
        self.tmp_path, self.server, self.source, self.destination, self.tree = (
            tmp_path,
            server,
            source,
            destination,
            tree,
        )

    @property
    def destination_vault(self) -> str:
        return vault_arn(self.destination)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with two_accounts(tmp_path) as built:
        yield built


@contextmanager
def two_accounts(tmp_path: Path) -> Iterator[Pair]:
    source, destination = source_and_destination(tmp_path)
    source_id = account_id(source)
    tree = tmp_path / "tree"
    make_files(tree)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    with serving(destination) as server:
        register(source, "destination", server, issue_credential(destination, "copier", "--account-id", source_id))
        yield Pair(tmp_path, server, source, destination, tree)


def copy(cli: Cli, arn: str, vault: str, *extra: str) -> dict:
    return dict(cli.json("copy", "start", "--recovery-point", arn, "--destination-vault", vault, "--wait", *extra))


def test_copy_is_restorable_from_the_destination_alone(pair: Pair) -> None:
    point = pair.source.backup("files")["recovery_point_arn"]
    job = copy(pair.source, point, pair.destination_vault)
    assert job["state"] == "COMPLETED", job
    copied = job["result"]["destination_recovery_point_arn"]
    assert copied.split(":")[4] == account_id(pair.destination)

    described = pair.destination.json("recovery-points", "describe", "--recovery-point", copied)
    assert described["status"] == "COMPLETED"
    assert described["source_recovery_point_arn"] == point
    original = pair.source.json("recovery-points", "describe", "--recovery-point", point)
    assert described["creation_date"] == original["creation_date"]

    expected = snapshot_tree(pair.tree)
    shutil.rmtree(pair.source.home)  # the source account is gone: keys, catalog, vault
    target = pair.tmp_path / "restored"
    pair.destination.run("restore", "start", "--recovery-point", copied, "--target", str(target), "--wait")
    assert snapshot_tree(target) == expected
    assert pair.destination.json("verify", "--read-data")["ok"]


def test_second_copy_sends_only_new_chunks(pair: Pair) -> None:
    first = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    (pair.tree / "f00.bin").write_bytes(os.urandom(400_000))  # 1 of 12 files changes
    second_point = pair.source.backup("files")["recovery_point_arn"]
    second = copy(pair.source, second_point, pair.destination_vault)
    total = first["result"]["bytes_transferred"]
    assert first["result"]["bytes_on_wire"] > total * 0.9  # random data: everything crossed once
    assert second["result"]["chunks_sent"] <= 3
    assert second["result"]["bytes_on_wire"] < total * 0.15, second["result"]
    target = pair.tmp_path / "restored"
    copied = second["result"]["destination_recovery_point_arn"]
    pair.destination.run("restore", "start", "--recovery-point", copied, "--target", str(target), "--wait")
    assert snapshot_tree(target) == snapshot_tree(pair.tree)


def test_one_command_copies_several_points_in_order_and_stops_at_the_first_failure(pair: Pair) -> None:
    first = pair.source.backup("files")["recovery_point_arn"]
    (pair.tree / "f01.bin").write_bytes(os.urandom(400_000))
    second = pair.source.backup("files")["recovery_point_arn"]
    both = pair.source.json(
        "copy", "start", "--recovery-point", first, "--recovery-point", second,
        "--destination-vault", pair.destination_vault, "--wait",
    )["copy_jobs"]  # fmt: skip
    assert [job["state"] for job in both] == ["COMPLETED", "COMPLETED"]
    assert [job["result"]["source_recovery_point_arn"] for job in both] == [first, second]
    assert both[1]["result"]["chunks_sent"] <= 3  # the second sent only what the first did not
    copied = {
        p["source_recovery_point_arn"] for p in pair.destination.json("recovery-points", "list")["recovery_points"]
    }
    assert {first, second} <= copied

    third = pair.source.backup("files")["recovery_point_arn"]
    missing = third.rsplit(":", 1)[0] + ":00000000-0000-0000-0000-000000000000"
    refused = pair.source.run(
        "copy", "start", "--recovery-point", third, "--recovery-point", missing,
        "--destination-vault", pair.destination_vault, "--wait", ok=False,
    )  # fmt: skip
    assert_one_line_error(refused, 2, "00000000-0000-0000-0000-000000000000")
    assert third in {
        p["source_recovery_point_arn"] for p in pair.destination.json("recovery-points", "list")["recovery_points"]
    }


def test_copy_back_into_a_new_source_account(pair: Pair) -> None:
    copied = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)["result"][
        "destination_recovery_point_arn"
    ]
    expected = snapshot_tree(pair.tree)
    shutil.rmtree(pair.source.home)
    # A new source account with the old one's id cannot exist; the destination trusts the new one explicitly.
    fresh = Cli(pair.tmp_path / "new-source")
    fresh.run("init")
    fresh_id = account_id(fresh)
    policy = default_destination_policy(
        source_account_ids=[fresh_id],
        source_vault_arns=[vault_arn(fresh)],
        admin_principal_arns=[root_arn(account_id(pair.destination))],
    )
    (pair.tmp_path / "policy2.json").write_text(json.dumps(policy))
    pair.destination.run("vaults", "put-access-policy", "Default", "--file", str(pair.tmp_path / "policy2.json"))
    credential = issue_credential(pair.destination, "restorer", "--account-id", fresh_id)
    register(fresh, "destination", pair.server, credential)

    job = copy(fresh, copied, vault_arn(fresh))
    assert job["state"] == "COMPLETED", job
    back = job["result"]["destination_recovery_point_arn"]
    target = pair.tmp_path / "restored"
    fresh.run("restore", "start", "--recovery-point", back, "--target", str(target), "--wait")
    assert snapshot_tree(target) == expected


def test_unreachable_endpoint_is_one_clear_line(pair: Pair) -> None:
    point = pair.source.backup("files")["recovery_point_arn"]
    pair.server.stop()
    failed = pair.source.run(
        "copy", "start", "--recovery-point", point, "--destination-vault", pair.destination_vault, "--wait", ok=False
    )
    assert_one_line_error(failed, 9, "cannot reach account endpoint", pair.server.endpoint)
    jobs = [j for j in pair.source.json("jobs", "list")["jobs"] if j["job_type"] == "COPY"]
    assert [j["state"] for j in jobs] == ["FAILED"]


def test_revoked_and_wrong_credentials_are_refused(pair: Pair) -> None:
    point = pair.source.backup("files")["recovery_point_arn"]
    key = pair.source.json("accounts", "list")["accounts"][0]["key_id"]
    pair.destination.run("credentials", "revoke", key)
    failed = pair.source.run(
        "copy", "start", "--recovery-point", point, "--destination-vault", pair.destination_vault, "--wait", ok=False
    )
    assert_one_line_error(failed, 8, "revoked")

    wrong = issue_credential(pair.destination, "copier2", "--account-id", account_id(pair.source))
    result = pair.source.run(
        "accounts",
        "add",
        "destination",
        "--endpoint",
        pair.server.endpoint,
        "--key-id",
        wrong["access_key_id"],
        env={"STRONGROOM_REMOTE_SECRET": "not-the-secret"},
        ok=False,
    )
    assert_one_line_error(result, 8, "signature")


def test_expired_credential_is_refused(pair: Pair) -> None:
    credential = issue_credential(
        pair.destination, "short", "--account-id", account_id(pair.source), "--expires-in-days", "1"
    )
    edit_catalog_as_owner(
        pair.destination,  # a day passes
        "UPDATE credentials SET expires_at = '2000-01-01T00:00:00+00:00' WHERE key_id = ?",
        credential["access_key_id"],
    )
    result = pair.source.run(
        "accounts",
        "add",
        "other",
        "--endpoint",
        pair.server.endpoint,
        "--key-id",
        credential["access_key_id"],
        env={"STRONGROOM_REMOTE_SECRET": credential["secret_access_key"]},
        ok=False,
    )
    assert_one_line_error(result, 8, "expired")


def test_wrong_endpoints_are_one_clear_line(pair: Pair, tmp_path: Path) -> None:
    import http.server
    import threading

    credential = issue_credential(pair.destination, "checker", "--account-id", account_id(pair.source))
    secret = {"STRONGROOM_REMOTE_SECRET": credential["secret_access_key"]}
    key = credential["access_key_id"]

    wrong_account = pair.source.run(
        "accounts",
        "add",
        "d2",
        "--endpoint",
        pair.server.endpoint,
        "--key-id",
        key,
        "--account-id",
        "123456789012",
        env=secret,
        ok=False,
    )
    assert_one_line_error(wrong_account, 9, "serves account", "not 123456789012")

    not_a_url = pair.source.run(
        "accounts", "add", "d3", "--endpoint", "ftp://example", "--key-id", key, env=secret, ok=False
    )
    assert_one_line_error(not_a_url, 9, "not an account endpoint URL")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        other = f"http://127.0.0.1:{server.server_address[1]}"
        not_strongroom = pair.source.run(
            "accounts", "add", "d4", "--endpoint", other, "--key-id", key, env=secret, ok=False
        )
        assert_one_line_error(not_strongroom, 9, other, "without an error body")
    finally:
        server.shutdown()
        server.server_close()
    assert [a["name"] for a in pair.source.json("accounts", "list")["accounts"]] == ["destination"]


def test_a_changed_chunk_crosses_as_a_delta_against_what_the_destination_holds(pair: Pair) -> None:
    big = pair.tree / "f00.bin"
    data = bytearray(os.urandom(2_500_000))  # about two chunks of incompressible data
    big.write_bytes(bytes(data))
    copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    data[1_200_000:1_200_100] = os.urandom(100)  # a 100-byte change inside one chunk
    big.write_bytes(bytes(data))
    second = copy(pair.source, pair.source.backup("files")["recovery_point_arn"], pair.destination_vault)
    result = second["result"]
    assert result["delta_chunks_sent"] >= 1, result
    assert result["delta_chunks_sent"] == result["chunks_sent"], result
    assert result["bytes_on_wire"] < 200_000, result  # far from the >1 MB of incompressible chunks changed
    target = pair.tmp_path / "restored"
    copied = result["destination_recovery_point_arn"]
    pair.destination.run("restore", "start", "--recovery-point", copied, "--target", str(target), "--wait")
    assert snapshot_tree(target) == snapshot_tree(pair.tree)
    assert pair.destination.json("verify", "--read-data")["ok"]


def test_copy_over_tls_with_a_pinned_certificate(tmp_path: Path) -> None:
    source, destination = Cli(tmp_path / "source"), Cli(tmp_path / "destination")
    source.run("init")
    destination.run("init")
    source_id = account_id(source)
    destination.run(
        "vaults",
        "put-access-policy",
        "Default",
        "--default-destination",
        "--source-account-id",
        source_id,
        "--source-vault-arn",
        vault_arn(source),
    )
    make_files(tmp_path / "tree", count=3)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    cert, key = self_signed_certificate(tmp_path)
    with serving(destination, "--tls-cert", str(cert), "--tls-key", str(key)) as server:
        assert server.endpoint.startswith("https://")
        credential = issue_credential(destination, "copier", "--account-id", source_id)
        secret = {"STRONGROOM_REMOTE_SECRET": credential["secret_access_key"]}
        unpinned = source.run(
            "accounts",
            "add",
            "destination",
            "--endpoint",
            server.endpoint,
            "--key-id",
            credential["access_key_id"],
            env=secret,
            ok=False,
        )
        assert_one_line_error(unpinned, 9, "cannot reach account endpoint", "certificate verify failed", "--ca-file")
        source.run(
            "accounts",
            "add",
            "destination",
            "--endpoint",
            server.endpoint,
            "--key-id",
            credential["access_key_id"],
            "--ca-file",
            str(cert),
            env=secret,
        )
        job = copy(source, source.backup("files")["recovery_point_arn"], vault_arn(destination))
        assert job["state"] == "COMPLETED", job


def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    destination = Cli(tmp_path / "destination")
    destination.run("init")
    refused = destination.run("serve", "--host", "0.0.0.0", "--port", "1", ok=False)
    assert_one_line_error(refused, 2, "refusing to serve plain HTTP on 0.0.0.0", "--tls-cert")
