"""A copy session cannot hold the destination's vault hostage: not after a failure, not idle, not kept alive.

An incoming copy session holds the vault's writers lock, which the garbage collector must take
exclusively. The attacker holds the source's destination credential and drives the real protocol against
a real ``strongroom serve``; the destination's operator sets the session limits on the command line
(tiny here, so no test waits long; no assertion is about elapsed time).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import zstandard

from strongroom.catalog import Catalog
from strongroom.errors import NotFoundError, RemoteError, StrongroomError
from strongroom.transport import wire
from strongroom.transport.client import AccountClient
from strongroom.vault.source import source_chunk_id
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
from tests.support.cli import Cli
from tests.support.hostile import stolen_announcement, stolen_id_key

POLLS = 1200  # bound of every wait below (at 0.05 s each: a minute)


@dataclass
class Copier:
    """The source's side: its CLI and a client signed with its own destination credential."""

    source: Cli
    destination: Cli
    server: Server
    client: AccountClient
    source_point: str

    def open_session(self) -> str:
        announce = stolen_announcement(self.client, self.source, self.source_point, datetime.now(UTC).isoformat(), 30)
        return str(self.client.start_copy_in("Default", announce)["copy_job_id"])

    def send_chunk(self, session: str, size: int = 200_000) -> None:
        data = os.urandom(size)  # new junk under its true id: what a source may always send
        chunk_id = source_chunk_id(stolen_id_key(self.source), data)
        self.client.put_chunks(session, wire.encode_frame(chunk_id, len(data), zstandard.compress(data)))


def make_accounts(tmp_path: Path) -> tuple[Cli, Cli, dict[str, Any]]:
    source, destination = source_and_destination(tmp_path)
    make_files(tmp_path / "tree", count=4, size=100_000)
    source.run("resources", "add", "files", "--type", "directory", "--path", str(tmp_path / "tree"))
    credential = issue_credential(destination, "copier", "--account-id", account_id(source))
    return source, destination, credential


@contextmanager
def copier(source: Cli, destination: Cli, credential: dict[str, Any], *serve_options: str) -> Iterator[Copier]:
    with serving(destination, *serve_options) as server:
        register(source, "destination", server, credential)
        client = AccountClient(server.endpoint, credential["access_key_id"], credential["secret_access_key"])
        try:
            yield Copier(source, destination, server, client, source.backup("files")["recovery_point_arn"])
        finally:
            client.close()


def writers_lock_free(home: Path, vault: str = "Default") -> bool:
    """Can the garbage collector take the vault's writers lock exclusively now (what it does, without waiting)?"""
    fd = os.open(home / "locks" / f"vault-{vault}.writers", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def copy_job(cli: Cli, job_id: str) -> dict[str, Any]:
    catalog = Catalog(cli.home / "catalog.db")  # no process per poll: read the catalog as the CLI would
    try:
        return catalog.get_job(job_id).as_dict()
    finally:
        catalog.close()


def wait_for_job_state(cli: Cli, job_id: str, state: str) -> dict[str, Any]:
    for _ in range(POLLS):
        job = copy_job(cli, job_id)
        if job["state"] == state:
            return job
        time.sleep(0.05)
    raise AssertionError(f"copy job {job_id} is still {job['state']}, expected {state}")


def collect(cli: Cli) -> dict[str, Any]:
    [gc] = cli.json("lifecycle", "run", "--gc-wait", "0")["garbage_collection"]
    return dict(gc)


def test_an_idle_session_expires_and_frees_the_vault_without_another_session(tmp_path: Path) -> None:
    source, destination, credential = make_accounts(tmp_path)
    with copier(source, destination, credential, "--copy-idle-timeout", "1") as attacker:
        session = attacker.open_session()
        attacker.send_chunk(session)  # garbage once the session is gone
        assert not writers_lock_free(destination.home)
        job = wait_for_job_state(destination, session, "FAILED")  # nobody starts another session meanwhile
        assert "idle timeout" in job["status_message"], job
        assert writers_lock_free(destination.home)
        with pytest.raises(NotFoundError, match="has ended: the source sent nothing"):
            attacker.send_chunk(session)
        gc = collect(destination)
        assert gc["status"] == "COMPLETED" and gc["objects_deleted"] >= 1, gc


def test_a_session_kept_alive_ends_at_the_maximum_lifetime_and_gc_proceeds(tmp_path: Path) -> None:
    source, destination, credential = make_accounts(tmp_path)
    with copier(source, destination, credential, "--copy-idle-timeout", "600", "--copy-max-lifetime", "3") as attacker:
        session = attacker.open_session()
        attacker.send_chunk(session)
        postponed = collect(destination)  # while the session lives, GC says who holds it and until when
        assert postponed["status"] == "POSTPONED", postponed
        [holder] = postponed["held_by"]
        assert holder["job_id"] == session and holder["principal_arn"].endswith(":user/copier"), holder
        assert holder["ends_by"] and session in postponed["message"] and "at the latest" in postponed["message"]

        ended = None
        for _ in range(POLLS):  # keep-alive requests, as often as an attacker likes
            try:
                attacker.client.missing(session, [os.urandom(32)])
            except StrongroomError as exc:
                ended = exc
                break
            time.sleep(0.05)
        assert isinstance(ended, NotFoundError) and "maximum session lifetime" in ended.message, ended
        job = copy_job(destination, session)
        assert job["state"] == "FAILED" and "maximum session lifetime" in job["status_message"], job
        assert writers_lock_free(destination.home)
        gc = collect(destination)
        assert gc["status"] == "COMPLETED" and gc["objects_deleted"] >= 1, gc


def test_overlapping_sessions_cannot_keep_gc_out(tmp_path: Path) -> None:
    """Each session is capped, so the attacker chains them, a new one before the last ends. Once the collector
    asks for the vault, new sessions wait for it (the API goes on answering), so it gets in."""
    source, destination, credential = make_accounts(tmp_path)
    with copier(source, destination, credential, "--copy-idle-timeout", "600", "--copy-max-lifetime", "3") as attacker:
        opened = [attacker.open_session()]
        attacker.send_chunk(opened[0])
        collector = destination.popen("lifecycle", "run", "--gc-wait", "30", "--json")
        for _ in range(200):
            if collector.poll() is not None:
                break
            opened.append(attacker.open_session())  # waits while the collector holds the vault
            for session in opened:
                with suppress(NotFoundError):
                    attacker.client.missing(session, [os.urandom(32)])  # keep every live session alive
            time.sleep(0.5)
        out, err = collector.communicate(timeout=600)
        assert collector.returncode == 0, err
        [gc] = json.loads(out)["garbage_collection"]
        assert gc["status"] == "COMPLETED" and gc["objects_deleted"] >= 1, gc


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_during_a_copy_releases_the_vault_at_once(tmp_path: Path) -> None:
    """The chunk write and the catalog's write both fail (no space at all): the locks are free all the same,
    the failure is recorded once there is room, and the next copy succeeds, with no restart."""
    source, destination, credential = make_accounts(tmp_path)
    saved = tmp_path / "saved-home"
    subprocess.run(["cp", "-a", str(destination.home), str(saved)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(destination.home)], check=True)
    try:
        subprocess.run(f"cp -a {saved}/. {destination.home}/", shell=True, check=True)
        # A short idle timeout only makes the server's reaper (which retries recording the failure) run often.
        with copier(source, destination, credential, "--copy-idle-timeout", "8") as attacker:
            session = attacker.open_session()
            filler = destination.home / "filler"
            _fill(filler)
            refused = _upload_until_refused(attacker, session)
            assert writers_lock_free(destination.home), "the failed session still holds the vault"
            assert "no space left" in refused.message, refused  # the source is told why, not "HTTP 500"
            filler.unlink()
            job = wait_for_job_state(destination, session, "FAILED")
            assert "no space left" in job["status_message"], job
            job = source.json(
                "copy",
                "start",
                "--recovery-point",
                attacker.source_point,
                "--destination-vault",
                vault_arn(destination),
                "--wait",
            )
            assert job["state"] == "COMPLETED", job
            assert destination.json("verify", "--read-data")["ok"]
    finally:
        subprocess.run(["umount", "-l", str(destination.home)], check=False)


def _upload_until_refused(attacker: Copier, session: str) -> StrongroomError:
    """Chunks are written by the receiver's threads: a write error surfaces with a later request or the commit."""
    for _ in range(20):
        try:
            attacker.send_chunk(session)
        except StrongroomError as exc:
            return exc
    with pytest.raises(StrongroomError) as refused:
        attacker.client.commit_copy_in(session)
    return refused.value


def _fill(path: Path) -> None:
    """Take every free byte of the file system ``path`` is on."""
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as handle:
        for _ in range(64):
            try:
                handle.write(block)
            except OSError:
                break
        for _ in range(1 << 20):  # then the last partial block, byte-sized steps down
            try:
                handle.write(b"\0" * 4096)
            except OSError:
                break
        for _ in range(4096):
            try:
                handle.write(b"\0")
            except OSError:
                break


def test_a_frame_whose_zstd_header_claims_more_than_announced_is_refused_uninflated(tmp_path: Path) -> None:
    """A hostile source's FULL frame: 10 bytes announced, a zstd frame of a few KiB whose own header claims
    256 MiB. The destination produces at most 11 bytes of it (never trusting the frame's content size) and
    refuses the chunk."""
    source, destination, credential = make_accounts(tmp_path)
    with copier(source, destination, credential) as attacker:
        session = attacker.open_session()
        bomb = zstandard.ZstdCompressor().compress(bytes(256 << 20))
        assert len(bomb) < 1 << 16
        chunk_id = source_chunk_id(stolen_id_key(source), bytes(10))
        with pytest.raises(RemoteError, match="arrived with 11 bytes, announced 10"):
            attacker.client.put_chunks(session, wire.encode_frame(chunk_id, 10, bomb))
