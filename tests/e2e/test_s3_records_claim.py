"""What a later backup into an S3 vault asks of the bucket, and why it may ask less.

A home's claim on the vault's catalog records (services/records_claim.py): one conditional write of the home
marker replaces reading the marker and the vault's record before every record write, and refuses all the same:
a vault another home attached, a catalog put back from an older copy (with or without the rest of the home), a
version planted on top of the marker. The previous point's manifest comes from the home's cache
(vault/manifest.py), which a planted file cannot fool."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.errors import CatalogIntegrityError, VaultInUseError
from strongroom.model import JobState
from strongroom.services.account import Account, open_account
from strongroom.services.backup import create_backup_job, run_backup_job
from strongroom.services.homes import vault_cache
from strongroom.store.s3 import S3Store
from tests.support.cli import PASSPHRASE, Cli, assert_one_line_error
from tests.support.s3server import S3_TEST_ENV, S3Server
from tests.support.trees import make_awkward_tree

VAULT = "Offsite"
IN_USE_EXIT = 8
INTEGRITY_EXIT = 7


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in S3_TEST_ENV.items():
        monkeypatch.setenv(name, value)


def _home(tmp_path: Path, name: str) -> Cli:
    cli = Cli(tmp_path / name)
    cli.env.update(S3_TEST_ENV)
    cli.run("init")
    return cli


def _backed_up(tmp_path: Path, s3_server: S3Server, *, versioned: bool = False) -> tuple[Cli, str]:
    """A home with an S3 vault and two backups in it. Unversioned by default: Ceph RGW 16 (scripts/s3-check.sh)
    has conditional writes only there; moto and AWS have them on versioned (Object Lock) buckets too."""
    cli = _home(tmp_path, "old")
    url = s3_server.new_store_url(object_lock=versioned)
    cli.run("vaults", "create", VAULT, "--store", url)
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(make_awkward_tree(tmp_path / "src")))
    for _ in range(2):
        assert _backup(cli)["state"] == "COMPLETED"
    return cli, url


def _backup(cli: Cli, *, ok: bool = True) -> Any:
    args = ("backup", "start", "--resource", "files", "--vault", VAULT, "--wait")
    return cli.json(*args) if ok else cli.run(*args, ok=False)


def _points(cli: Cli) -> list[str]:
    listed = cli.json("recovery-points", "list", "--vault", VAULT)["recovery_points"]
    return sorted(p["recovery_point_id"] for p in listed)


def _count_record_requests(store: S3Store) -> Counter[str]:
    """Requests for ``catalog/`` keys, as '<operation> <key>'."""
    return _count_requests(store, "catalog")


def _count_requests(store: S3Store, folder: str) -> Counter[str]:
    """Requests for keys under ``folder/``, as '<operation> <folder>/<first part>'."""
    counts: Counter[str] = Counter()

    def count(model: Any, params: dict[str, Any] | None = None, **_: Any) -> None:
        path = str((params or {}).get("url_path", ""))
        if f"/{folder}/" in path:
            counts[f"{model.name} {folder}/{path.split(f'/{folder}/', 1)[1].split('/')[0]}"] += 1

    store.client.meta.events.register("before-call.s3", count)
    return counts


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[Account]]:
    accounts: list[Account] = []
    yield accounts
    for account in accounts:
        account.close()


def _open(home: Path, accounts: list[Account]) -> Account:
    account = open_account(home, lambda: PASSPHRASE)
    accounts.append(account)
    return account


def _backed_up_and_open(tmp_path: Path, s3_server: S3Server, opened: list[Account]) -> tuple[Cli, Account, S3Store]:
    """:func:`_backed_up`, then the home's account opened in this process and its S3 store (to count requests)."""
    cli, _ = _backed_up(tmp_path, s3_server)
    account = _open(cli.home, opened)
    store = account.vault(VAULT).store
    assert isinstance(store, S3Store)
    return cli, account, store


def _change_retention(account: Account, days: int) -> None:
    """A security-relevant change of a point: the catalog commits it, then writes the vault's records."""
    point = account.catalog.list_recovery_points(vault_name=VAULT)[-1]
    account.catalog.update_recovery_point(point.id, delete_after_days=days)


def test_a_record_write_reads_no_catalog_record_and_writes_the_marker_once(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    cli, account, store = _backed_up_and_open(tmp_path, s3_server, opened)
    requests = _count_record_requests(store)
    _change_retention(account, 41)
    assert requests == Counter(
        {"PutObject catalog/home": 1, "PutObject catalog/points": 1, "PutObject catalog/vault": 1}
    ), requests
    assert cli.json("verify")["ok"]


def _backup_in_process(account: Account) -> str:
    job, lock = create_backup_job(account, "files", VAULT)
    finished = run_backup_job(account, job.id, lock)
    assert finished.state == JobState.COMPLETED
    return (finished.recovery_point_arn or "").rsplit(":", 1)[1]


def test_a_later_backup_gets_no_catalog_record_nor_its_previous_manifest(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    _, account, store = _backed_up_and_open(tmp_path, s3_server, opened)
    records, manifests = _count_record_requests(store), _count_requests(store, "manifests")
    _backup_in_process(account)
    gets = [r for r in records + manifests if r.startswith(("GetObject", "HeadObject"))]
    assert gets == [], (records, manifests)
    assert records["PutObject catalog/home"] == 2  # one claim per record write: the point made, then completed


def test_a_planted_cached_manifest_is_dropped_and_the_stored_one_used(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    """Someone who can write the home's cache puts another point's manifest (authentic, of this vault) and
    garbage in place of the previous point's: each fails its binding to the key, is dropped, and the backup
    reads the stored manifest (and keeps it) — the cache saves a request, it decides nothing."""
    cli, _ = _backed_up(tmp_path, s3_server)
    account = _open(cli.home, opened)
    vault = account.vault(VAULT)
    cache = vault_cache(cli.home, vault.config.vault_id) / "manifests"
    first, previous = (p.id for p in account.catalog.list_recovery_points(vault_name=VAULT))
    stored = (cache / previous).read_bytes()
    (cache / previous).write_bytes((cache / first).read_bytes())  # another point's manifest under its name
    manifests = _count_requests(vault.store, "manifests")  # type: ignore[arg-type]
    newest = _backup_in_process(account)
    assert manifests[f"GetObject manifests/{previous}"] == 1
    assert (cache / previous).read_bytes() == stored and (cache / newest).exists()
    (cache / newest).write_bytes(b"garbage")
    manifests.clear()
    _backup_in_process(account)
    assert manifests[f"GetObject manifests/{newest}"] == 1
    assert cli.json("verify", "--read-data")["ok"]


def test_a_vault_attached_elsewhere_is_refused_to_its_old_home(tmp_path: Path, s3_server: S3Server) -> None:
    old, url = _backed_up(tmp_path, s3_server)
    new = _home(tmp_path, "new")
    new.json("vaults", "attach", VAULT, "--store", url, "--force", "--json")
    listing = _points(new)
    # The old home comes back, its claim (the marker's tag) now stale: it reads, finds the new home, refuses
    # before it stores anything, and the new home's view stays whole.
    assert_one_line_error(_backup(old, ok=False), IN_USE_EXIT, "written by another home")
    assert _points(new) == listing and new.json("verify")["ok"]
    new.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "src"))
    assert _backup(new)["state"] == "COMPLETED"  # the new home's own claim works at once


def test_a_catalog_put_back_under_a_kept_claim_is_refused_without_a_read(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    cli, _ = _backed_up(tmp_path, s3_server)
    older = tmp_path / "catalog-older.db"
    _copy_catalog(cli.home / "catalog.db", older)
    assert _backup(cli)["state"] == "COMPLETED"
    _copy_catalog(older, cli.home / "catalog.db")  # catalog.db alone put back: the home's claim is newer

    account = _open(cli.home, opened)
    requests = _count_record_requests(account.vault(VAULT).store)  # type: ignore[arg-type]
    with pytest.raises(CatalogIntegrityError) as refused:
        _change_retention(account, 42)
    assert f"older than vault '{VAULT}'" in refused.value.message
    assert requests == Counter(), requests  # refused by the claim kept in the home: nothing read nor written


def test_a_claim_edited_to_match_a_put_back_catalog_is_not_believed(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    """Whoever can write the home's files (not knowing the passphrase) puts catalog.db back and lowers the kept
    claim's sequence to match it: the claim's MAC fails, so the home reads the vault's record and refuses."""
    cli, _ = _backed_up(tmp_path, s3_server)
    older = tmp_path / "catalog-older.db"
    _copy_catalog(cli.home / "catalog.db", older)
    claim_path = next((cli.home / "cache" / "vaults").glob("*/records-claim.json"))
    older_sequence = json.loads(claim_path.read_text())["sequence"]
    assert _backup(cli)["state"] == "COMPLETED"
    _copy_catalog(older, cli.home / "catalog.db")
    claim = json.loads(claim_path.read_text())
    claim_path.write_text(json.dumps({**claim, "sequence": older_sequence}))

    account = _open(cli.home, opened)
    requests = _count_record_requests(account.vault(VAULT).store)  # type: ignore[arg-type]
    with pytest.raises(CatalogIntegrityError) as refused:
        _change_retention(account, 47)
    assert f"older than vault '{VAULT}'" in refused.value.message
    assert requests["GetObject catalog/vault"] == 1, requests  # the claim was not believed: the record was read


def test_a_whole_home_put_back_is_refused_by_the_vault_s_own_record(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    """Catalog and claim put back together: the marker is no longer the version the claim names, so the
    home reads the vault's record and finds it newer."""
    cli, _ = _backed_up(tmp_path, s3_server)
    saved = tmp_path / "home-copy"
    _copy_catalog(cli.home / "catalog.db", tmp_path / "catalog-older.db")
    shutil.copytree(cli.home / "cache", saved)
    assert _backup(cli)["state"] == "COMPLETED"
    _copy_catalog(tmp_path / "catalog-older.db", cli.home / "catalog.db")
    shutil.rmtree(cli.home / "cache")
    shutil.copytree(saved, cli.home / "cache")

    account = _open(cli.home, opened)
    with pytest.raises(CatalogIntegrityError) as refused:
        _change_retention(account, 43)
    assert f"older than vault '{VAULT}'" in refused.value.message
    assert_one_line_error(cli.run("verify", ok=False), INTEGRITY_EXIT)


def test_a_version_planted_on_the_marker_costs_reads_and_changes_nothing(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    """Someone with the bucket's credentials puts garbage over ``catalog/home``: the claim fails, the home reads
    past the forged version to its own marker, and claims again over the planted one."""
    cli, _ = _backed_up(tmp_path, s3_server, versioned=True)  # the forged version goes on top of the marker
    account = _open(cli.home, opened)
    store = account.vault(VAULT).store
    assert isinstance(store, S3Store)
    key = store.location.prefix + "catalog/home"
    store.client.put_object(Bucket=store.location.bucket, Key=key, Body=b"forged marker")
    requests = _count_record_requests(store)
    _change_retention(account, 44)
    if store.conditional_replace_supported():
        # The kept claim refused (412), the marker read past the planted version, then claimed over that version.
        assert requests["GetObject catalog/home"] >= 1 and requests["PutObject catalog/home"] == 2, requests
        requests.clear()
        _change_retention(account, 45)  # claimed again: no read
        assert not [r for r in requests if r.startswith(("GetObject", "HeadObject"))], requests
    else:  # Ceph RGW on a versioned bucket: the reads, every time
        assert not s3_server.is_moto and requests["GetObject catalog/home"] >= 1
    assert _backup(cli)["state"] == "COMPLETED" and cli.json("verify")["ok"]


def test_garbage_over_the_marker_of_an_unversioned_bucket_is_mended_by_a_forced_attach(
    tmp_path: Path, s3_server: S3Server
) -> None:
    """No authentic marker is left: record writes stop (they cannot tell whose vault it is) and say how to go
    on; ``vaults attach --force`` from the home that writes it rewrites the marker."""
    cli, url = _backed_up(tmp_path, s3_server)
    bucket, prefix = url.split("//", 1)[1].split("?", 1)[0].split("/", 1)
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/catalog/home", Body=b"garbage")
    assert_one_line_error(_backup(cli, ok=False), INTEGRITY_EXIT, "home marker is damaged", "--force")
    attach = cli.run("vaults", "attach", VAULT, "--store", url, ok=False)
    assert_one_line_error(attach, INTEGRITY_EXIT, "home marker is damaged", "--force")
    assert cli.json("vaults", "attach", VAULT, "--store", url, "--force", "--json")["outcome"] == "ALREADY_ATTACHED"
    assert _backup(cli)["state"] == "COMPLETED" and cli.json("verify")["ok"]


def test_an_attach_racing_a_record_write_leaves_one_writer(
    tmp_path: Path, s3_server: S3Server, s3_env: None, opened: list[Account]
) -> None:
    """The marker another home wrote between this home's read and its write: the conditional write fails and
    the home refuses, instead of both homes writing the vault's records."""
    cli, url = _backed_up(tmp_path, s3_server)
    shutil.rmtree(cli.home / "cache")  # no claim kept: the home reads the marker first
    account = _open(cli.home, opened)
    vault = account.vault(VAULT)
    read = vault.read_record_tagged

    def read_then_attached_elsewhere(key: str) -> tuple[bytes | None, str | None]:
        found = read(key)
        new = _home(tmp_path, "new")
        new.json("vaults", "attach", VAULT, "--store", url, "--force", "--json")
        return found

    vault.read_record_tagged = read_then_attached_elsewhere  # type: ignore[method-assign]
    with pytest.raises(VaultInUseError) as refused:
        _change_retention(account, 46)
    assert "changed while this home was checking it" in refused.value.message


def _copy_catalog(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
