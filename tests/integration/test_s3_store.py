"""The S3 store against a real S3 server on loopback (moto's server mode): URLs, errors, conditional writes
and Object Lock. The generic store guarantees are in tests/contract/test_store_contract.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from strongroom.errors import ConfigError, NotFoundError, StorageError
from strongroom.store.base import LockMode, Retention, open_store
from strongroom.store.s3 import PROBE_KEY, S3Store, parse_s3_url
from tests.support.s3server import S3Server

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def _store(url: str) -> S3Store:
    store = open_store(url)
    assert isinstance(store, S3Store)
    return store


def _in(days: float) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


# URLs --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix",
        f"s3://bucket/prefix?aws_secret_access_key={SECRET}",
        f"s3://bucket/prefix?access_key={SECRET}",
        f"s3://bucket/prefix?session_token={SECRET}",
        f"s3://bucket/prefix?endpoint=http://user:{SECRET}@127.0.0.1:9000",
    ],
)
def test_credentials_in_a_url_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        open_store(url)
    line = refused.value.one_line()
    assert "credentials" in line and "AWS" in line
    assert SECRET not in line and "\n" not in line


def test_the_url_is_canonical_and_holds_no_secret() -> None:
    location = parse_s3_url("s3://bkt/a/b/?region=eu-west-1&endpoint=http://127.0.0.1:9000/&addressing=path")
    assert (location.bucket, location.prefix, location.endpoint) == ("bkt", "a/b/", "http://127.0.0.1:9000")
    assert location.url == "s3://bkt/a/b/?endpoint=http://127.0.0.1:9000&region=eu-west-1&addressing=path"
    assert parse_s3_url(location.url) == location
    for bad in ("s3:///prefix", "s3://bkt/x?colour=red", "s3://bkt/../x", "s3://bkt/x?conditional_writes=maybe"):
        with pytest.raises(ConfigError):
            parse_s3_url(bad)


# Errors ------------------------------------------------------------------------------------------
def test_an_unknown_profile_is_one_line(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url(profile="no-such-profile"))
    with pytest.raises(ConfigError) as failed:
        store.head("k")
    assert "no-such-profile" in failed.value.one_line() and "\n" not in failed.value.one_line()


def test_a_missing_bucket_is_one_clear_error(s3_server: S3Server) -> None:
    store = _store(s3_server.url("no-such-bucket-here"))
    for attempt in (lambda: store.put("k", b"x"), lambda: list(store.list()), lambda: store.get("k")):
        with pytest.raises(StorageError) as failed:
            attempt()
        assert "bucket no-such-bucket-here does not exist" in failed.value.one_line()


def test_an_unreachable_endpoint_is_a_storage_error(s3_server: S3Server) -> None:
    from tests.support.ports import free_port

    store = _store(f"s3://bkt/p?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1")
    with pytest.raises(StorageError, match="cannot reach"):
        store.get("k")


# Conditional writes --------------------------------------------------------------------------------
def test_the_probe_finds_conditional_writes_and_stays_out_of_listings(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    store = _store(s3_server.url(bucket))
    assert store.put("chunks/aa/1", b"x", if_absent=True)
    assert store.capabilities.conditional_write
    raw = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert f"vault/{PROBE_KEY}" in {item["Key"] for item in raw}
    assert list(store.list()) == ["chunks/aa/1"]
    again = _store(s3_server.url(bucket))  # a second process: the probe answers 412, nothing new written
    assert again.conditional_writes_supported()


def test_two_threads_put_if_absent_one_key_exactly_one_wins(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url(conditional_writes="true"))
    barrier = threading.Barrier(2)
    results: dict[int, bool] = {}

    def writer(n: int) -> None:
        barrier.wait()
        results[n] = store.put("manifests/rp", f"writer-{n}".encode(), if_absent=True)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results.values()) == [False, True]
    winner = next(n for n, won in results.items() if won)
    assert store.get("manifests/rp") == f"writer-{winner}".encode()


def test_the_fallback_without_conditional_writes_heads_then_puts(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    store = _store(s3_server.url(bucket, conditional_writes="false"))
    assert not store.capabilities.conditional_write
    assert store.put("chunks/aa/1", b"first", if_absent=True)
    assert not store.put("chunks/aa/1", b"second", if_absent=True)
    assert store.get("chunks/aa/1") == b"first"
    keys = {item["Key"] for item in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"vault/chunks/aa/1"}  # no probe was sent


@pytest.mark.parametrize("versioned", [False, True])
def test_replace_if_writes_only_over_the_version_it_names(s3_server: S3Server, versioned: bool) -> None:
    """The conditional replace the catalog records' claim stands on (services/records_claim.py): one request,
    and a writer holding an older tag, or expecting no object, writes nothing. Ceph RGW 16 has none on a
    versioned bucket (it ignores If-None-Match there and fails every If-Match): the probe must find that."""
    store = _store(s3_server.new_store_url(object_lock=versioned))
    if not store.conditional_replace_supported():
        assert versioned and not s3_server.is_moto
        return
    first = store.replace_if("catalog/home", b"first", None)
    assert first is not None
    assert store.replace_if("catalog/home", b"absent?", None) is None  # it is there now
    second = store.replace_if("catalog/home", b"second", first)
    assert second is not None and second != first
    assert store.replace_if("catalog/home", b"stale writer", first) is None
    assert store.get_tagged("catalog/home") == (b"second", second)
    assert store.replace_if("catalog/gone", b"x", second) is None  # If-Match on a key that does not exist


def test_racing_conditional_replaces_have_exactly_one_winner(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url())
    tag = store.replace_if("catalog/home", b"start", None)
    barrier = threading.Barrier(2)
    results: dict[int, str | None] = {}

    def writer(n: int) -> None:
        barrier.wait()
        results[n] = store.replace_if("catalog/home", f"writer-{n}".encode(), tag)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [n for n, won in results.items() if won is not None]
    assert len(winners) == 1
    assert store.get_tagged("catalog/home") == (f"writer-{winners[0]}".encode(), results[winners[0]])


def test_without_conditional_writes_there_is_no_conditional_replace(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url(conditional_writes="false"))
    assert not store.conditional_replace_supported()
    with pytest.raises(StorageError):
        store.replace_if("catalog/home", b"x", None)


# Object Lock ---------------------------------------------------------------------------------------
def test_object_lock_is_a_capability_of_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    assert _store(s3_server.new_store_url(object_lock=True)).capabilities.object_lock
    plain = _store(s3_server.new_store_url())
    assert not plain.capabilities.object_lock
    retention = Retention(LockMode.COMPLIANCE, _in(1))
    with pytest.raises(StorageError, match="no Object Lock"):
        plain.put("k", b"x", retention=retention)
    assert plain.head("k") is None
    for other in (open_store((tmp_path / "local").as_uri()), open_store("memory://no-lock")):
        with pytest.raises(StorageError, match="no Object Lock"):
            other.put("k", b"x", retention=retention)
        assert other.head("k") is None


def test_a_compliance_locked_object_survives_its_own_credentials(s3_server: S3Server) -> None:
    """Acting as the destination host's root with the vault's own S3 credentials: delete by version and
    overwrite both fail to remove the locked bytes; a plain delete only hides them behind a marker."""
    bucket = s3_server.new_bucket(object_lock=True)
    store = _store(s3_server.url(bucket))
    retention = Retention(LockMode.COMPLIANCE, _in(30))
    assert store.put("manifests/rp1", b"locked bytes", if_absent=True, retention=retention)
    assert store.retention("manifests/rp1") == retention
    raw = s3_server.client()
    key = "vault/manifests/rp1"
    version = raw.head_object(Bucket=bucket, Key=key)["VersionId"]

    with pytest.raises(raw.exceptions.ClientError, match="AccessDenied"):
        raw.delete_object(Bucket=bucket, Key=key, VersionId=version)
    with pytest.raises(raw.exceptions.ClientError, match="AccessDenied"):
        raw.delete_object(Bucket=bucket, Key=key, VersionId=version, BypassGovernanceRetention=True)
    store.put("manifests/rp1", b"overwritten")  # a new version on top; the locked one stays
    store.delete("manifests/rp1")  # a delete marker
    with pytest.raises(NotFoundError):
        store.get("manifests/rp1")
    assert raw.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read() == b"locked bytes"


def test_a_governance_lock_refuses_a_delete_by_version_without_bypass(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(object_lock=True)
    store = _store(s3_server.url(bucket))
    store.put("chunks/aa/1", b"chunk", retention=Retention(LockMode.GOVERNANCE, _in(1)))
    raw = s3_server.client()
    version = raw.head_object(Bucket=bucket, Key="vault/chunks/aa/1")["VersionId"]
    with pytest.raises(raw.exceptions.ClientError, match="AccessDenied"):
        raw.delete_object(Bucket=bucket, Key="vault/chunks/aa/1", VersionId=version)
    assert store.get("chunks/aa/1") == b"chunk"


def test_retention_is_extended_never_shortened_nor_weakened(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket(object_lock=True)
    store = _store(s3_server.url(bucket))
    first = Retention(LockMode.COMPLIANCE, _in(10))
    store.put("chunks/aa/1", b"chunk", retention=first)

    later = Retention(LockMode.COMPLIANCE, _in(20))
    assert store.extend_retention("chunks/aa/1", later) == later
    assert store.retention("chunks/aa/1") == later

    assert store.extend_retention("chunks/aa/1", Retention(LockMode.COMPLIANCE, _in(5))) == later
    assert store.extend_retention("chunks/aa/1", Retention(LockMode.GOVERNANCE, _in(15))) == later
    assert store.retention("chunks/aa/1") == later

    # moto deviates from S3 here: it lets the same credentials shorten a COMPLIANCE retention, so on moto
    # only our code stands between a caller and a shorter retention. Real S3 and Ceph RGW
    # (scripts/s3-check.sh) refuse it.
    raw = s3_server.client()
    shorten = {
        "Bucket": bucket,
        "Key": "vault/chunks/aa/1",
        "Retention": {"Mode": "COMPLIANCE", "RetainUntilDate": _in(1)},
    }
    if s3_server.is_moto:
        raw.put_object_retention(**shorten)
        assert store.retention("chunks/aa/1") == Retention(LockMode.COMPLIANCE, _in(1))
    else:
        with pytest.raises(ClientError, match="AccessDenied"):
            raw.put_object_retention(**shorten)
        assert store.retention("chunks/aa/1") == later


def test_a_retain_until_date_is_rounded_up_never_down(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url(object_lock=True))
    until = _in(2) + timedelta(microseconds=400_000)
    store.put("chunks/aa/1", b"x", retention=Retention(LockMode.COMPLIANCE, until))
    kept = store.retention("chunks/aa/1")
    assert kept is not None and until < kept.until <= until + timedelta(seconds=1)
    assert store.extend_retention("chunks/aa/1", Retention(LockMode.COMPLIANCE, until)) == kept


def test_retention_of_an_object_without_one_and_of_a_missing_object(s3_server: S3Server) -> None:
    store = _store(s3_server.new_store_url(object_lock=True))
    store.put("plain", b"x")
    assert store.retention("plain") is None
    wanted = Retention(LockMode.GOVERNANCE, _in(3))
    assert store.extend_retention("plain", wanted) == wanted
    assert store.retention("plain") == wanted
    with pytest.raises(NotFoundError):
        store.retention("missing")


# The vault writer on S3 ----------------------------------------------------------------------------------
def _two_backups(url: str) -> int:
    """Back up 3 MiB, change a few bytes in the middle, back up again: the second's delta chunk count."""
    import io
    import os

    from strongroom.vault import Vault
    from strongroom.vault.writer import RecoveryPointWriter

    vault = Vault.create(open_store(url), "passphrase")
    data = bytearray(os.urandom(3 * 1024 * 1024))
    with RecoveryPointWriter(vault, "rp-1") as writer:
        writer.store_stream("data", io.BytesIO(bytes(data)))
        first = writer.commit("r", "directory", {})
    data[1_500_000:1_500_010] = b"0123456789"
    with RecoveryPointWriter(vault, "rp-2", previous=first) as writer:
        writer.store_stream("data", io.BytesIO(bytes(data)))
        writer.commit("r", "directory", {})
        return writer.stats.delta_chunks


def test_delta_chunks_only_where_put_if_absent_is_atomic(s3_server: S3Server) -> None:
    """Racing writers of one delta chunk may pick different bases; without an atomic put-if-absent the
    loser's index could name a base the stored object does not use, which the collector may then free."""
    assert _two_backups(s3_server.new_store_url()) > 0
    assert _two_backups(s3_server.new_store_url(conditional_writes="false")) == 0
