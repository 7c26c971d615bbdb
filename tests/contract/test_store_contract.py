"""One conformance suite that every ObjectStore implementation must pass."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from strongroom.errors import NotFoundError, StorageError
from strongroom.store.base import ObjectStore, open_store, store_schemes
from strongroom.store.local import LocalStore
from strongroom.store.memory import MemoryStore
from tests.support.faulty_store import FaultyStore
from tests.support.s3server import S3Server

# How to make an empty store of each registered scheme. A scheme registered without a recipe here fails
# every test below: no store joins the registry without passing this suite.
EMPTY_STORE_URL = {
    "file": lambda tmp, request: (tmp / "store").as_uri(),
    "memory": lambda tmp, request: f"memory://contract-{tmp.name}",
    "faulty+memory": lambda tmp, request: f"faulty+memory://contract-{tmp.name}",  # tests/support/faulty_store.py
    "s3": lambda tmp, request: _s3(request).new_store_url(),  # a fresh bucket on moto's server
}


def _s3(request: pytest.FixtureRequest) -> S3Server:
    server: S3Server = request.getfixturevalue("s3_server")
    return server


@pytest.fixture(params=store_schemes())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    recipe = EMPTY_STORE_URL.get(request.param)
    if recipe is None:
        pytest.fail(f"store scheme '{request.param}' is registered but has no contract fixture here")
    return open_store(recipe(tmp_path, request))


def test_the_suite_covers_every_registered_store_and_the_faulty_wrapper() -> None:
    assert {"file", "memory", "faulty+memory", "s3"} <= set(store_schemes())
    assert isinstance(open_store("faulty+memory://x"), FaultyStore)


def test_put_then_get_returns_the_same_bytes(store: ObjectStore) -> None:
    assert store.put("a/b/c", b"\x00payload\xff")
    assert store.get("a/b/c") == b"\x00payload\xff"
    assert store.head("a/b/c") == 9


def test_unsynced_put_is_visible_and_flush_succeeds(store: ObjectStore) -> None:
    assert store.put("chunks/aa/x", b"data", if_absent=True, sync=False)
    assert store.get("chunks/aa/x") == b"data"
    store.flush()
    assert store.head("chunks/aa/x") == 4


def test_missing_object_is_not_found(store: ObjectStore) -> None:
    assert store.head("nope") is None
    assert not store.exists("nope")
    with pytest.raises(NotFoundError):
        store.get("nope")


def test_put_if_absent_never_replaces(store: ObjectStore) -> None:
    assert store.put("k", b"first", if_absent=True)
    assert not store.put("k", b"second", if_absent=True)
    assert store.get("k") == b"first"


def test_plain_put_replaces(store: ObjectStore) -> None:
    store.put("k", b"first")
    store.put("k", b"second")
    assert store.get("k") == b"second"


def test_list_by_prefix(store: ObjectStore) -> None:
    for key in ("chunks/aa/1", "chunks/bb/2", "manifests/x", "config"):
        store.put(key, b"x")
    assert sorted(store.list("chunks/")) == ["chunks/aa/1", "chunks/bb/2"]
    assert sorted(store.list()) == ["chunks/aa/1", "chunks/bb/2", "config", "manifests/x"]


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put("k", b"x")
    store.delete("k")
    store.delete("k")
    assert store.head("k") is None


def test_concurrent_put_if_absent_has_one_winner(store: ObjectStore) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        results.append(store.put("race", f"writer-{n}".encode(), if_absent=True))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert store.get("race").startswith(b"writer-")


def test_local_store_rejects_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ("../x", "/etc/passwd", "a/../../b"):
        with pytest.raises(StorageError):
            store.put(key, b"x")


def test_local_store_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a", b"1")
    store.put("a", b"2", if_absent=True)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_open_store_by_url(tmp_path: Path) -> None:
    store = open_store((tmp_path / "s").as_uri())
    store.put("k", b"v")
    assert open_store(str(tmp_path / "s")).get("k") == b"v"
    assert isinstance(open_store("memory://x"), MemoryStore)


def test_the_faulty_store_fails_the_nth_put_and_alters_only_what_is_read(tmp_path: Path) -> None:
    store = FaultyStore(LocalStore(tmp_path / "store"))
    store.fail_put(after=2, error=OSError(28, "No space left on device"))
    assert store.put("a", b"1") and store.put("b", b"2")
    with pytest.raises(OSError, match="No space"):
        store.put("c", b"3")
    assert store.head("c") is None
    store.heal()
    with store.tampered("a", lambda data: data + b"!"):
        assert store.get("a") == b"1!"
        assert store.inner.get("a") == b"1"  # the stored object is untouched
    assert store.get("a") == b"1"
