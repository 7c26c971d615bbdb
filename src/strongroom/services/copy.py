"""Copy jobs: a recovery point into a vault of another account, incrementally and re-encrypted there.

Push (this account's point into another account's vault) speaks CopyIntoBackupVault to the other
account's API; pull, the copy back of the blueprint, asks the other account for CopyFromBackupVault
into a vault of this one. Both send only the chunks the receiving vault lacks (docs/wire-protocol.md).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, suppress
from functools import partial
from typing import Any

from strongroom.errors import RemoteError, StrongroomError, UsageError
from strongroom.model import Arn, Job, JobType, RecoveryPoint, RecoveryPointStatus, iso, new_id, now, tag_problem
from strongroom.policy.principals import root_arn
from strongroom.services import notifications, vault_ops
from strongroom.services.account import Account
from strongroom.services.copy_receive import CopyReceiver
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import ProgressCallback, complete_job, complete_recovery_point, create_job, running
from strongroom.services.recovery_points import latest_intact_reader
from strongroom.services.remote import client_for
from strongroom.services.wal_copy import copies_wal, copy_wal, speaks_wal
from strongroom.services.writers import hold_writer
from strongroom.transport import wire
from strongroom.transport.client import AccountClient
from strongroom.vault import envelope
from strongroom.vault.manifest import ChunkRef, load_manifest
from strongroom.vault.reader import RecoveryPointReader, read_object
from strongroom.vault.vault import Vault

BATCH_REFS = 1024
MAX_BODY_BYTES = 8 << 20


def create_copy_job(
    account: Account,
    recovery_point_arn: str,
    destination_vault_arn: str | None = None,
    delete_after_days: int | None = None,
    extra_parameters: dict[str, Any] | None = None,
) -> tuple[Job, JobLock]:
    destination = destination_vault_arn or account.catalog.get_setting("destination_vault_arn")
    if not destination:
        raise UsageError(
            "no destination vault: pass --destination-vault ARN",
            hint="Or set destination.vault_arn in the account's configuration and apply it",
        )
    source, target = Arn.parse(recovery_point_arn), Arn.parse(destination)
    if source.kind != "recovery-point" or target.kind != "backup-vault":
        raise UsageError("copy takes a recovery point ARN and a backup vault ARN")
    direction = _direction(account, source, target)
    parameters: dict[str, Any] = {
        "direction": direction,
        "source_recovery_point_arn": recovery_point_arn,
        "destination_backup_vault_arn": destination,
        "delete_after_days": delete_after_days,
        **(extra_parameters or {}),
    }
    if direction == "push":
        rp = account.catalog.get_recovery_point(recovery_point_arn)
        if rp.status != RecoveryPointStatus.COMPLETED:
            raise UsageError(f"recovery point {rp.arn} is {rp.status.value}, not COMPLETED, and cannot be copied")
        account.catalog.get_remote_account(target.account_id)
        resource_id, vault_name = rp.resource_id, rp.vault_name
        parameters["source_backup_vault_arn"] = account.catalog.get_vault(vault_name).arn
    else:
        account.catalog.get_remote_account(source.account_id)
        resource_id, vault_name = None, account.catalog.get_vault(target.name).name
    account.vault(vault_name)  # unlock now: a wrong passphrase fails before any job exists
    return create_job(account, JobType.COPY, resource_id=resource_id, vault_name=vault_name, parameters=parameters)


def _direction(account: Account, source: Arn, target: Arn) -> str:
    own = account.account_id
    if source.account_id == own and target.account_id != own:
        return "push"
    if source.account_id != own and target.account_id == own:
        return "pull"
    if source.account_id == own:
        raise UsageError(
            "both vaults belong to this account; copies go to another account's vault",
            hint="Use the destination vault ARN printed by 'strongroom output' in the destination account",
        )
    raise UsageError("neither the recovery point nor the destination vault belongs to this account")


def run_copy_job(
    account: Account, job_id: str, lock: JobLock | None = None, progress: ProgressCallback | None = None
) -> Job:
    job = account.catalog.get_job(job_id)
    with notifications.job_events(account, job.id), running(account, job, lock):
        if job.parameters["direction"] == "push":
            result = _push(account, job, progress)
            complete_job(account, job.id, bytes_processed=result.get("bytes_transferred", 0), result=result)
        else:
            _pull(account, job, progress)  # completes the pulled point and the job in one transaction
    return account.catalog.get_job(job.id)


# Push ------------------------------------------------------------------------------------------
def _push(account: Account, job: Job, progress: ProgressCallback | None) -> dict[str, Any]:
    params = job.parameters
    rp = account.catalog.get_recovery_point(params["source_recovery_point_arn"])
    target = Arn.parse(params["destination_backup_vault_arn"])
    if rp.metadata.get("continuous"):
        return _push_continuous(account, rp, target)
    vault = account.vault(rp.vault_name)
    manifest = load_manifest(vault, rp.id, cached=True)  # the chunks are read from the store all the same
    days = params.get("delete_after_days") or rp.delete_after_days
    announce = {
        "source_recovery_point_arn": rp.arn,
        "source_vault_arn": account.vault_arn(rp.vault_name),
        "source_vault_id": manifest.vault_id,
        "resource_id": rp.resource_id,
        "resource_type": rp.resource_type,
        "creation_date": rp.creation_date,
        "delete_after_days": days,
        "metadata": manifest.metadata,
        "streams": {n: {"size": s.size, "chunk_count": s.chunk_count} for n, s in manifest.streams.items()},
    }
    if rp.tags:  # only when there are some: an older destination refuses the field
        announce["tags"] = dict(rp.tags)
    sent = {"chunks_sent": 0, "delta_chunks_sent": 0, "plaintext_bytes_sent": 0, "chunks_skipped": 0}
    with client_for(account, target.account_id) as client:
        if _speaks_protocol_2(client):  # it checks every chunk against our ids: give it the key they are under
            announce["source_chunk_id_key"] = base64.b64encode(vault.keys.id_key).decode("ascii")
        session = client.start_copy_in(target.name, announce)["copy_job_id"]
        try:
            with RecoveryPointReader(vault, manifest) as reader, _Sender(client, session) as sender:
                for name, stream in manifest.streams.items():
                    for batch in _batches(reader.iter_refs(stream)):
                        _push_batch(sender, reader, name, batch, sent, progress)
                sender.wait()
            answer = client.commit_copy_in(session)
        except StrongroomError as exc:
            with suppress(StrongroomError):
                client.abort_copy_in(session, exc.one_line())
            raise
        # The cluster's WAL follows its base backup (docs/pitr.md, "Both accounts"); a failure fails the job,
        # the base backup's copy stays COMPLETED at the destination and the next copy sends the WAL again.
        wal = copy_wal(account, client, rp, target.name) if copies_wal(rp) and speaks_wal(client) else None
        wire_bytes = client.bytes_sent + client.bytes_received
    return {
        "source_recovery_point_arn": rp.arn,
        "destination_recovery_point_arn": answer["recovery_point_arn"],
        "destination_copy_job_id": answer["copy_job_id"],
        "bytes_on_wire": wire_bytes,
        "bytes_transferred": sum(s.size for s in manifest.streams.values()),
        **sent,
        **({"wal": wal} if wal is not None else {}),
    }


def _push_continuous(account: Account, rp: RecoveryPoint, target: Arn) -> dict[str, Any]:
    """A continuous point holds no data: copying it sends the cluster's WAL the destination lacks and has the
    destination keep a continuous point of its own (it needs a copied base backup of the cluster already)."""
    with client_for(account, target.account_id) as client:
        if not speaks_wal(client):
            raise UsageError(
                f"the destination account's server does not take WAL copies; {rp.arn} is a continuous point",
                hint="Upgrade Strongroom in the destination account, or copy the resource's base backups",
            )
        wal = copy_wal(account, client, rp, target.name)
        wire_bytes = client.bytes_sent + client.bytes_received
    return {
        "source_recovery_point_arn": rp.arn,
        "destination_recovery_point_arn": wal.get("destination_continuous_recovery_point_arn"),
        "bytes_on_wire": wire_bytes,
        "bytes_transferred": wal["bytes_sent"],
        "wal": wal,
    }


def _speaks_protocol_2(client: AccountClient) -> bool:
    """Whether the destination's server checks copied chunks (API 2); an older one refuses the key field."""
    return str(client.whoami().get("api_version", "1")) != "1"


def _batches(refs: Iterator[ChunkRef]) -> Iterator[list[ChunkRef]]:
    batch: list[ChunkRef] = []
    for ref in refs:
        batch.append(ref)
        if len(batch) >= BATCH_REFS:
            yield batch
            batch = []
    if batch:
        yield batch


class _Sender:
    """A push's requests that need no answer (chunk bodies, refs), sent in order by one background thread
    while the next body is read and encoded, so the source's work overlaps the destination's. At most one
    request is in flight; a request that needs an answer (``missing``) waits for it, so the client is used by
    one thread at a time and the destination sees the requests in the order the protocol has them."""

    def __init__(self, client: AccountClient, session: str) -> None:
        self.client = client
        self.session = session
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strongroom-push")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)  # nothing in flight once the session is aborted

    def missing(self, ids: list[bytes]) -> list[bool]:
        self.wait()
        return self.client.missing(self.session, ids)

    def put_chunks(self, body: bytes) -> None:
        self._submit(self.client.put_chunks, body)

    def append_refs(self, stream: str, refs: list[tuple[bytes, int]]) -> None:
        self._submit(self.client.append_refs, stream, refs)

    def wait(self) -> None:
        """Wait for the request in flight; its error is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _submit(self, send: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(send, self.session, *args)


def _push_batch(
    sender: _Sender,
    reader: RecoveryPointReader,
    stream: str,
    batch: list[ChunkRef],
    sent: dict[str, int],
    progress: ProgressCallback | None,
) -> None:
    unique = list({ref.id: ref for ref in batch}.values())
    bases = list({ref.base for ref in unique if ref.base is not None} - {ref.id for ref in unique})
    flags = sender.missing([ref.id for ref in unique] + bases)
    needed = [ref for ref, flag in zip(unique, flags, strict=False) if flag]
    held_bases = {base for base, flag in zip(bases, flags[len(unique) :], strict=True) if not flag}
    encoder = wire.FrameEncoder(reader.vault, held_bases)
    body: list[bytes] = []
    size = 0
    for ref, (frame, plaintext) in reader.iter_opened(needed, partial(_stored_frame, reader.vault, held_bases)):
        if frame is None:
            frame = encoder.frame(ref.id, plaintext or b"", ref.base)
        elif wire.is_delta(frame):
            encoder.deltas += 1
        body.append(frame)
        size += len(frame)
        if size >= MAX_BODY_BYTES:
            sender.put_chunks(b"".join(body))
            body, size = [], 0
    if body:
        sender.put_chunks(b"".join(body))
    sender.append_refs(stream, [(ref.id, ref.size) for ref in batch])
    sent["chunks_sent"] += len(needed)
    sent["delta_chunks_sent"] += encoder.deltas
    sent["plaintext_bytes_sent"] += sum(ref.size for ref in needed)
    sent["chunks_skipped"] += len(unique) - len(needed)
    if progress:
        progress(sum(ref.size for ref in batch))


def _stored_frame(
    vault: Vault, held_bases: Collection[bytes], ref: ChunkRef, prefetched: bytes | None, _: object
) -> tuple[bytes | None, bytes | None]:
    """A chunk's frame made of its body as stored — zstd, or a delta against a base the receiver holds — so
    the source neither decompresses, re-hashes nor compresses it again (the receiver checks every chunk
    against our ids all the same); else its verified plaintext, for :class:`wire.FrameEncoder`."""

    def stored(sealed: bytes, what: str) -> tuple[envelope.Kind, envelope.Compression, bytes]:
        return envelope.open_body(vault.keys.encryption_key, ref.id, sealed, what=what)

    kind, compression, body = vault.objects.open(ref.id, stored, prefetched=prefetched)
    if kind == envelope.Kind.CHUNK and compression == envelope.Compression.ZSTD:
        return wire.encode_frame(ref.id, ref.size, body), None
    base_id = body[: envelope.BASE_ID_SIZE]
    if kind == envelope.Kind.CHUNK and compression == envelope.Compression.ZSTD_DELTA and base_id in held_bases:
        return wire.encode_frame(ref.id, ref.size, body[envelope.BASE_ID_SIZE :], base_id), None
    return None, read_object(vault, ref.id, envelope.Kind.CHUNK, prefetched=prefetched)


# Pull (copy back) ---------------------------------------------------------------------------------
def _pull(account: Account, job: Job, progress: ProgressCallback | None) -> dict[str, Any]:
    params = job.parameters
    source = Arn.parse(params["source_recovery_point_arn"])
    vault = account.catalog.get_vault(Arn.parse(params["destination_backup_vault_arn"]).name)
    with client_for(account, source.account_id) as client, ExitStack() as stack:
        info = client.start_copy_out(source.name, vault.arn)
        stack.callback(lambda: _quietly(client.end_copy_out, info["session_id"]))
        remote_rp = info["recovery_point"]
        days = params.get("delete_after_days") or (remote_rp.get("lifecycle") or {}).get("delete_after_days")
        vault_ops.authorize_action(
            account,
            root_arn(account.account_id),
            "CopyIntoBackupVault",
            vault,
            {"backup:CopySources": [info["source_vault_arn"]]},
        )
        # As for a push: retention counts from this account's clock, the other account's date is information.
        arrival = now()
        created = vault_ops.claimed_creation_date(remote_rp.get("creation_date"), arrival, "the other account")
        retention = vault_ops.new_point_retention(vault, iso(arrival) or "", days)
        rp = _pulled_point(account, job, vault.name, info, created, retention)
        stack.enter_context(hold_writer(account, vault.name))
        receiver = _receiver(account, vault.name, info, rp)
        stack.callback(receiver.close)
        for name, shape in info["streams"].items():
            _pull_stream(client, info["session_id"], receiver, name, int(shape["chunk_count"]), progress)
        manifest = receiver.commit(info["resource_id"], info["resource_type"], info["metadata"], info["streams"])
        stats = receiver.stats_dict()
        source_bytes = sum(s.size for s in manifest.streams.values())
        result = {
            "source_recovery_point_arn": str(source),
            "destination_recovery_point_arn": rp.arn,
            "bytes_on_wire": client.bytes_sent + client.bytes_received,
            "bytes_transferred": source_bytes,
            **stats,
        }
        complete_recovery_point(
            account,
            rp.id,
            manifest,
            source_bytes=source_bytes,
            stored_bytes=stats["stored_stored_bytes"],
            new_bytes=stats["stored_new_bytes"],
            metadata=info["metadata"],
            job_id=job.id,
            bytes_processed=source_bytes,
            result=result,
        )
    return result


def _pulled_point(
    account: Account, job: Job, vault_name: str, info: dict[str, Any], created: str, retention: dict[str, Any]
) -> RecoveryPoint:
    rp_id = new_id()
    rp = RecoveryPoint(
        id=rp_id,
        arn=account.recovery_point_arn(rp_id),
        vault_name=vault_name,
        resource_id=info["resource_id"],
        resource_type=info["resource_type"],
        status=RecoveryPointStatus.CREATING,
        creation_date=created,
        backup_job_id=job.id,
        source_recovery_point_arn=info["recovery_point"]["recovery_point_arn"],
        tags=_claimed_tags(info["recovery_point"].get("tags")),
        **retention,
    )
    account.catalog.add_recovery_point(rp, {"recovery_point_arn": rp.arn, "resource_id": rp.resource_id})
    return rp


def _claimed_tags(tags: Any) -> dict[str, str]:
    """The other account's tags of the point, kept as information (never trusted for access or retention)."""
    if tags is None:
        return {}
    problem = "tags is not an object" if not isinstance(tags, dict) else tag_problem(tags)
    if problem:
        raise RemoteError(f"the other account sent malformed recovery point tags: {problem}")
    return dict(tags)


def _receiver(account: Account, vault_name: str, info: dict[str, Any], rp: RecoveryPoint) -> CopyReceiver:
    previous = latest_intact_reader(account, rp.resource_id, vault_name)
    base = previous.manifest if previous else None
    if previous:
        previous.close()
    return CopyReceiver(account, vault_name, info["source_vault_id"], rp.id, rp.creation_date, base)


def _pull_stream(
    client: AccountClient,
    session: str,
    receiver: CopyReceiver,
    stream: str,
    chunk_count: int,
    progress: ProgressCallback | None,
) -> None:
    start = 0
    while start < chunk_count:
        refs = client.copy_out_refs(session, stream, start, BATCH_REFS)
        if not refs:
            raise RemoteError(f"stream '{stream}' ended after {start} of {chunk_count} chunks")
        unique = list(dict.fromkeys(chunk_id for chunk_id, _ in refs))
        sizes = dict(refs)
        needed = [i for i, flag in zip(unique, receiver.missing(unique), strict=True) if flag]
        for group in _groups_by_size(needed, sizes):
            frames = list(wire.decode_frames(client.copy_out_chunks(session, group)))
            if [frame.chunk_id for frame in frames] != group:
                raise RemoteError("the source answered with other chunks than were asked for")
            receiver.receive(frames)
        receiver.append(stream, refs)
        start += len(refs)
        if progress:
            progress(sum(size for _, size in refs))


def _groups_by_size(ids: list[bytes], sizes: dict[bytes, int]) -> Iterator[list[bytes]]:
    group: list[bytes] = []
    total = 0
    for chunk_id in ids:
        group.append(chunk_id)
        total += sizes[chunk_id]
        if total >= MAX_BODY_BYTES:
            yield group
            group, total = [], 0
    if group:
        yield group


def _quietly(action: Any, *args: Any) -> None:
    with suppress(StrongroomError):
        action(*args)
