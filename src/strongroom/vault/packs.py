"""Vault format 2: sealed chunks and index objects packed into pack objects (docs/vault-format.md §2.1).

A pack ``packs/<hh>/<id>.pack`` is sealed objects back to back; its index ``packs/<hh>/<id>.idx`` (sealed,
kind 7, named by its own key) lists ``(object id, offset, length)``. Readers fetch a range and open it as
the object the id names (tag and keyed re-hash), so an index only says where to look: one that lies
gives an IntegrityError, never other data.

:class:`PackedObjects` is the vault-wide chunk -> pack map (built from the pack indexes; the bucket is its
only truth), reading and collecting; :class:`PackWriter` is one writer's session: objects are appended to
an in-memory pack, a full pack is uploaded whole (pack, then index) while the next fills, and ``flush``
uploads the last one and waits for every upload before the manifest may be written.
"""

from __future__ import annotations

import bisect
import json
import logging
import secrets
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.errors import FormatError, IntegrityError, NotFoundError, StrongroomError
from strongroom.faults import fault_point
from strongroom.fsutil import write_private
from strongroom.store.base import ObjectStore, Retention
from strongroom.vault import envelope
from strongroom.vault.envelope import Kind
from strongroom.vault.objects import Deleted, DeleteTally, ObjectLayout, Opener, T, WriteSession

if TYPE_CHECKING:
    from strongroom.vault.retention import RetentionKeeper
    from strongroom.vault.vault import Vault

log = logging.getLogger(__name__)

PACKS_PREFIX = "packs/"
PACK_SUFFIX = ".pack"
INDEX_SUFFIX = ".idx"
PACK_INDEX_FORMAT = 1
DEFAULT_PACK_SIZE = 16 * 1024 * 1024
ORPHAN_MARK = b"orphan-pack-0000"  # 16 bytes + a pack id's 16: a keyed BLAKE3 id is never this
READ_AHEAD_BYTES = 4 * 1024 * 1024  # a single read of a pack fetches the objects after it, up to this many bytes
READ_AHEAD_OBJECTS = 256
READ_BEHIND_BYTES = 1024 * 1024  # ... and the objects before it, up to this many bytes
AHEAD_CACHE_BYTES = 16 * 1024 * 1024  # objects read ahead and not yet used, held at most
PACKS_IN_FLIGHT = 2  # full packs uploading at once, besides the one filling: bounds a writer's memory


_Ordered = tuple[list[tuple[bytes, int, int]], list[int]]  # a pack's entries in offset order, and their offsets


def pack_key(pack_id: str) -> str:
    return f"{PACKS_PREFIX}{pack_id[:2]}/{pack_id}{PACK_SUFFIX}"


def index_key(pack_id: str) -> str:
    return f"{PACKS_PREFIX}{pack_id[:2]}/{pack_id}{INDEX_SUFFIX}"


def pack_id_of(key: str) -> str | None:
    """The pack id a ``packs/`` key names (its pack or its index), or None for a key of another shape."""
    if not key.startswith(PACKS_PREFIX):
        return None
    name = key.rsplit("/", 1)[-1]
    for suffix in (PACK_SUFFIX, INDEX_SUFFIX):
        if name.endswith(suffix):
            pack_id = name[: -len(suffix)]
            if (
                len(pack_id) == 32
                and all(c in "0123456789abcdef" for c in pack_id)
                and key == (pack_key(pack_id) if suffix == PACK_SUFFIX else index_key(pack_id))
            ):
                return pack_id
    return None


@dataclass(frozen=True)
class Location:
    pack_id: str
    offset: int
    length: int

    def describe(self, object_id: bytes) -> str:
        return f"object {object_id.hex()} in {pack_key(self.pack_id)} (bytes {self.offset}+{self.length})"


def encode_pack_index(pack_id: str, entries: list[tuple[bytes, int, int]]) -> bytes:
    body = {"format": PACK_INDEX_FORMAT, "pack": pack_id, "entries": [[i.hex(), o, n] for i, o, n in entries]}
    return json.dumps(body, separators=(",", ":")).encode()


def decode_pack_index(data: bytes, pack_id: str, what: str) -> list[tuple[bytes, int, int]]:
    """The entries of a pack index that authenticated; a malformed one (which only a key holder could seal)
    is an IntegrityError all the same."""
    try:
        raw = json.loads(data)
        if raw.get("format") != PACK_INDEX_FORMAT:
            raise FormatError(f"{what} has format {raw.get('format')}", hint="Upgrade Strongroom")
        if raw.get("pack") != pack_id:
            raise IntegrityError(f"{what} describes pack {raw.get('pack')}, not its own")
        entries = []
        for object_hex, offset, length in raw["entries"]:
            object_id = bytes.fromhex(object_hex)
            if len(object_id) != 32 or not (isinstance(offset, int) and isinstance(length, int)):
                raise ValueError("bad entry")
            if offset < 0 or length <= 0:
                raise ValueError("bad range")
            entries.append((object_id, offset, length))
        return entries
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{what} is malformed ({exc})") from None


class PackedObjects(ObjectLayout):
    """The vault's packs: a chunk -> pack map built from their indexes, reads by range, collection per pack."""

    packed = True

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.store = vault.store
        self.pack_size = getattr(vault.store, "pack_size", None) or DEFAULT_PACK_SIZE
        self._lock = threading.RLock()
        self._where: dict[bytes, list[Location]] = defaultdict(list)
        self._entries: dict[str, list[tuple[bytes, int, int]]] = {}  # pack id -> its index's entries
        self._packs_any: set[str] = set()  # pack ids with a stored version (perhaps under a delete marker)
        self._packs_visible: set[str] = set()  # pack ids whose newest version is not a delete marker
        self._index_ids: set[str] = set()  # pack ids with an index object
        self._pending: dict[str, _OpenPack] = {}  # packs of live sessions not yet uploaded: readable here
        self.damaged_indexes: dict[str, str] = {}  # index key -> why it was ignored
        self._listed = False  # refreshed at least once: lookups before that would find nothing
        self._ahead: OrderedDict[bytes, bytes] = OrderedDict()  # sealed objects read (ahead), least recent first
        self._ahead_bytes = 0
        self._ordered: dict[str, _Ordered] = {}  # pack id -> its entries in offset order
        self._pack_turns: dict[str, threading.Lock] = {}  # single reads of one pack go one at a time

    def _ensure_listed(self) -> None:
        if not self._listed:
            self.refresh()

    # The map -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-list ``packs/`` and read the indexes not read yet; forget packs that are gone."""
        found_any, visible = self._listing()
        packs = {pid for key in found_any if key.endswith(PACK_SUFFIX) and (pid := pack_id_of(key))}
        indexes = {pid for key in found_any if key.endswith(INDEX_SUFFIX) and (pid := pack_id_of(key))}
        with self._lock:
            for gone in set(self._entries) - indexes:
                self._forget(gone)
            new = sorted(indexes - set(self._entries) - {pack_id_of(k) for k in self.damaged_indexes})
        loaded = self._load_indexes(new)
        with self._lock:
            for pack_id, entries in loaded.items():
                self._remember(pack_id, entries)
            self._packs_any = packs
            self._packs_visible = {pid for key in visible if key.endswith(PACK_SUFFIX) and (pid := pack_id_of(key))}
            self._index_ids = indexes
            self._listed = True
        self._prune_cache(indexes)

    def _remember(self, pack_id: str, entries: list[tuple[bytes, int, int]]) -> None:
        """Add a pack's entries to the map, once (two threads may refresh at once). Under ``_lock``."""
        if pack_id in self._entries:
            return
        self._entries[pack_id] = entries
        for object_id, offset, length in entries:
            self._where[object_id].append(Location(pack_id, offset, length))

    def _forget(self, pack_id: str) -> None:
        self._ordered.pop(pack_id, None)
        for object_id, _offset, _length in self._entries.pop(pack_id, []):
            kept = [loc for loc in self._where.get(object_id, []) if loc.pack_id != pack_id]
            if kept:
                self._where[object_id] = kept
            else:
                self._where.pop(object_id, None)

    def _listing(self) -> tuple[set[str], set[str]]:
        """Keys under ``packs/`` with a stored body (hidden ones too, on a versioned store), and those visible."""
        if type(self.store).versions is ObjectStore.versions:  # a store without versions: one LIST
            keys = set(self.store.list(PACKS_PREFIX))
            return keys, keys
        versions = list(self.store.versions(PACKS_PREFIX))  # on S3 as cheap as a LIST, and finds hidden keys too
        bodies = {v.key for v in versions if not v.delete_marker}
        hidden = {v.key for v in versions if v.delete_marker and v.latest}
        return bodies, bodies - hidden

    def _load_indexes(self, pack_ids: list[str]) -> dict[str, list[tuple[bytes, int, int]]]:
        if not pack_ids:
            return {}
        workers = max(1, min(len(pack_ids), self.store.concurrency))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="strongroom-packidx") as pool:
            results = list(pool.map(self._load_index, pack_ids))
        return {pack_id: entries for pack_id, entries in zip(pack_ids, results, strict=True) if entries is not None}

    def _load_index(self, pack_id: str) -> list[tuple[bytes, int, int]] | None:
        from strongroom.vault.vault import open_stored

        key = index_key(pack_id)
        what = f"pack index {key}"

        def opener(sealed: bytes) -> list[tuple[bytes, int, int]]:
            opened = envelope.open_sealed(self.vault.keys.encryption_key, key.encode(), sealed, what=what)
            if opened.kind != Kind.PACK_INDEX:
                raise IntegrityError(f"{what} is a {opened.kind.name.lower()}, not a pack index")
            return decode_pack_index(opened.plaintext, pack_id, what)

        cached = self._cached_index(pack_id, opener)
        if cached is not None:
            return cached

        def fetched(sealed: bytes) -> list[tuple[bytes, int, int]]:
            entries = opener(sealed)
            self._cache_index(pack_id, sealed)  # only what authenticated goes into the cache
            return entries

        try:
            return open_stored(self.store, key, fetched)
        except NotFoundError:
            return None
        except StrongroomError as exc:
            log.warning("%s ignored: %s", what, exc.message)
            with self._lock:
                self.damaged_indexes[key] = exc.message
            return None

    # The local cache of pack indexes -----------------------------------------------------------
    # ``Vault.index_cache`` (set by the home that opens the vault: services/homes.py) holds sealed pack indexes
    # exactly as stored, one file per pack id. The bucket's LIST stays the truth: only indexes of packs it lists
    # are loaded (refresh), each is authenticated under the vault key and its own key name like a fetched one,
    # and a file that fails is deleted and the index fetched again. So the cache saves GETs and decides nothing.
    def _cache_path(self, pack_id: str) -> Path | None:
        folder = self.vault.index_cache
        return None if folder is None else folder / f"{pack_id}{INDEX_SUFFIX}"

    def _cached_index(self, pack_id: str, opener: Callable[[bytes], T]) -> T | None:
        path = self._cache_path(pack_id)
        if path is None:
            return None
        try:
            sealed = path.read_bytes()
        except OSError:
            return None
        try:
            return opener(sealed)
        except StrongroomError as exc:
            log.warning("cached pack index %s dropped: %s", path, exc.message)
            path.unlink(missing_ok=True)
            return None

    def _cache_index(self, pack_id: str, sealed: bytes) -> None:
        path = self._cache_path(pack_id)
        if path is None:
            return
        try:
            write_private(path, sealed)
        except OSError as exc:  # a cache that cannot be written costs GETs, nothing else
            log.warning("pack index cache %s not written: %s", path, exc)

    def _prune_cache(self, listed: set[str]) -> None:
        """Drop cached indexes of packs the bucket no longer lists (collected here or by another home)."""
        folder = self.vault.index_cache
        if folder is None or not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name.endswith(INDEX_SUFFIX) and path.name[: -len(INDEX_SUFFIX)] not in listed:
                path.unlink(missing_ok=True)

    def locations(self, object_id: bytes) -> list[Location]:
        self._ensure_listed()
        with self._lock:
            return list(self._where.get(object_id, ()))

    def committed(self, object_id: bytes) -> Location | None:
        """Where a writer may reuse the object from: a pack with an index, whose newest version is visible."""
        self._ensure_listed()
        with self._lock:
            return next((loc for loc in self._where.get(object_id, ()) if loc.pack_id in self._packs_visible), None)

    def pack_entries(self, pack_id: str) -> list[tuple[bytes, int, int]] | None:
        with self._lock:
            return self._entries.get(pack_id)

    def _added(self, pack_id: str, entries: list[tuple[bytes, int, int]]) -> None:
        """A session's pack and its index are stored: the map knows them from now on."""
        with self._lock:
            self._remember(pack_id, entries)
            self._packs_any.add(pack_id)
            self._packs_visible.add(pack_id)
            self._index_ids.add(pack_id)
            self._pending.pop(pack_id, None)

    # Reading -----------------------------------------------------------------------------------
    def open(self, object_id: bytes, opener: Opener[T], *, prefetched: bytes | None = None) -> T:
        found = self.locations(object_id)
        if prefetched is None and found:
            prefetched = self._take_ahead(object_id)  # read along with an earlier object of its pack
        if prefetched is not None and found:
            try:
                return opener(prefetched, found[0].describe(object_id))
            except IntegrityError:  # the coalesced range may be of another copy: try each one below
                self._drop_ahead(object_id)
        if not found:
            self.refresh()  # written by another process since the map was built
            found = self.locations(object_id)
        if not found:
            raise IntegrityError(f"object {object_id.hex()} is missing from the vault (no pack index lists it)")
        failures = []
        for location in found:
            what = location.describe(object_id)
            try:
                return self.read_range(location, partial(_open_as, opener, what), object_id)
            except NotFoundError:
                failures.append(f"{what}: the pack is missing")
            except IntegrityError as exc:
                failures.append(exc.message)
        raise IntegrityError("; ".join(failures))

    def read_range(self, location: Location, open_bytes: Callable[[bytes], T], object_id: bytes | None = None) -> T:
        """``open_bytes`` over the bytes at ``location``: from a pack still in memory, else a ranged GET; on a
        versioned store an older version of the pack when the newest is hidden or does not open."""
        pending = self._pending_pack(location.pack_id)
        if pending is not None:
            data = pending.read(location.offset, location.length)
            if data is not None:
                return open_bytes(data)
        key = pack_key(location.pack_id)
        try:
            return open_bytes(self._read_ahead(location, object_id))
        except (NotFoundError, IntegrityError) as first:
            failure = first
        if object_id is not None and isinstance(failure, IntegrityError):  # perhaps a piece read earlier: fetch
            self._drop_ahead(object_id)
            try:
                return open_bytes(self._fetch_ahead(location, None))
            except (NotFoundError, IntegrityError) as second:
                failure = second
        older = [v for v in self.store.versions(key) if v.key == key and not v.delete_marker and not v.latest]
        for version in sorted(older, key=lambda v: v.modified, reverse=True):
            body = self.store.get_version(key, version.version_id)
            try:
                return open_bytes(body[location.offset : location.offset + location.length])
            except IntegrityError:
                continue
        raise failure

    def _read_ahead(self, location: Location, object_id: bytes | None = None) -> bytes:
        """The bytes at ``location`` in one ranged GET that also fetches the objects after it in the pack (up to
        READ_AHEAD_BYTES): single reads (a writer's delta bases, a copy's, ``verify --read-data``) mostly go in
        pack order, so the next ones come from memory (:meth:`_take_ahead`; at most AHEAD_CACHE_BYTES held).
        Reads of one pack take turns: a thread that waited finds its object read ahead by the one before it
        instead of sending an overlapping GET."""
        with self._lock:
            turn = self._pack_turns.setdefault(location.pack_id, threading.Lock())
        with turn:
            if object_id is not None and (piece := self._take_ahead(object_id)) is not None:
                return piece
            return self._fetch_ahead(location, object_id)

    def _fetch_ahead(self, location: Location, object_id: bytes | None) -> bytes:
        """One ranged GET of ``location`` and its neighbours: up to READ_AHEAD_BYTES after it and READ_BEHIND_BYTES
        before it (concurrent single reads arrive out of order); the neighbours go to the read-ahead cache."""
        before, after = self._neighbours(location)
        with self._lock:  # neighbours fetched already are not fetched again: the range stops before them
            before = before[next((i + 1 for i in reversed(range(len(before))) if before[i][0] in self._ahead), 0) :]
            after = after[: next((i for i, entry in enumerate(after) if entry[0] in self._ahead), len(after))]
        start = location.offset
        for _object_id, offset, _length in reversed(before):
            if location.offset - offset > READ_BEHIND_BYTES:
                break
            start = offset
        end = location.offset + location.length
        for _object_id, offset, length in after:
            if offset + length - location.offset > READ_AHEAD_BYTES:
                break
            end = max(end, offset + length)
        span = self.store.get_range(pack_key(location.pack_id), start, end - start)
        itself = [(object_id, location.offset, location.length)] if object_id is not None else []
        self._keep_span(span, start, [*before, *itself, *after])
        return span[location.offset - start : location.offset - start + location.length]

    def _keep_span(self, span: bytes, start: int, entries: Iterable[tuple[bytes, int, int]]) -> None:
        """Put the entries lying wholly in ``span`` (fetched from ``start``) into the read-ahead cache."""
        end = start + len(span)
        with self._lock:
            for ahead_id, offset, length in entries:
                if offset >= start and offset + length <= end and ahead_id not in self._ahead:
                    piece = span[offset - start : offset - start + length]
                    self._ahead[ahead_id] = piece
                    self._ahead_bytes += len(piece)
            self._trim_ahead()

    def _trim_ahead(self) -> None:
        """Drop the least recently used pieces beyond AHEAD_CACHE_BYTES. Under ``_lock``."""
        while self._ahead_bytes > AHEAD_CACHE_BYTES and self._ahead:
            self._ahead_bytes -= len(self._ahead.popitem(last=False)[1])

    def fetched_along(self, object_id: bytes) -> bytes | None:
        return self._take_ahead(object_id)

    def fetched_between(self, pack_id: str, start: int, end: int) -> bool:
        entries = self._between(pack_id, start, end)
        with self._lock:
            return any(object_id in self._ahead for object_id, _offset, _length in entries)

    def keep_along(self, pieces: dict[bytes, bytes]) -> None:
        with self._lock:
            for object_id, piece in pieces.items():
                if object_id not in self._ahead:
                    self._ahead[object_id] = piece
                    self._ahead_bytes += len(piece)
            self._trim_ahead()

    def _neighbours(self, location: Location) -> tuple[list[tuple[bytes, int, int]], list[tuple[bytes, int, int]]]:
        """The pack's entries just before ``location`` and those after it, in offset order."""
        ordered, offsets = self._ordered_entries(location.pack_id)
        first = bisect.bisect_left(offsets, location.offset)
        after = bisect.bisect_right(offsets, location.offset)
        return ordered[max(0, first - READ_AHEAD_OBJECTS // 4) : first], ordered[after : after + READ_AHEAD_OBJECTS]

    def _ordered_entries(self, pack_id: str) -> _Ordered:
        """The pack's entries in offset order, and their offsets (to bisect)."""
        with self._lock:
            ordered = self._ordered.get(pack_id)
            if ordered is None:
                entries = sorted(self._entries.get(pack_id, []), key=lambda entry: entry[1])
                ordered = (entries, [offset for _, offset, _ in entries])
                if entries:
                    self._ordered[pack_id] = ordered
            return ordered

    def _take_ahead(self, object_id: bytes) -> bytes | None:
        """Sealed bytes read along earlier; kept (least recently used dropped first): a delta base is often
        read again for the next chunk that uses it."""
        with self._lock:
            piece = self._ahead.get(object_id)
            if piece is not None:
                self._ahead.move_to_end(object_id)
            return piece

    def _drop_ahead(self, object_id: bytes) -> None:
        with self._lock:
            piece = self._ahead.pop(object_id, None)
            if piece is not None:
                self._ahead_bytes -= len(piece)

    def fetch_span(self, object_ids: list[bytes]) -> dict[bytes, bytes]:
        """One ranged GET for objects of one pack lying close together (a restore's read-ahead); {} if not."""
        located = [spot for spot in (self.committed(object_id) for object_id in object_ids) if spot is not None]
        if len(located) != len(object_ids) or len({spot.pack_id for spot in located}) != 1:
            return {}
        start = min(spot.offset for spot in located)
        end = max(spot.offset + spot.length for spot in located)
        try:
            span = self.store.get_range(pack_key(located[0].pack_id), start, end - start)
        except NotFoundError:
            return {}
        wanted = set(object_ids)
        self._keep_span(span, start, (e for e in self._between(located[0].pack_id, start, end) if e[0] not in wanted))
        return {
            object_id: span[spot.offset - start : spot.offset - start + spot.length]
            for object_id, spot in zip(object_ids, located, strict=True)
        }

    def _between(self, pack_id: str, start: int, end: int) -> list[tuple[bytes, int, int]]:
        """The pack's entries starting in [start, end): what a span fetched besides the objects asked for (a
        delta base of one of them, most often), kept for the reads that follow instead of fetched again."""
        ordered, offsets = self._ordered_entries(pack_id)
        return ordered[bisect.bisect_left(offsets, start) : bisect.bisect_left(offsets, end)]

    def _pending_pack(self, pack_id: str) -> _OpenPack | None:
        with self._lock:
            return self._pending.get(pack_id)

    def exists(self, object_id: bytes, hidden: Iterable[str] = ()) -> bool:
        self._ensure_listed()
        with self._lock:
            return any(loc.pack_id in self._packs_any for loc in self._where.get(object_id, ()))

    # Writing -----------------------------------------------------------------------------------
    def session(self, retention: Retention | None, keeper: RetentionKeeper | None) -> WriteSession:
        self.refresh()
        return PackWriter(self, retention, keeper)

    # Retention and collection ------------------------------------------------------------------
    def stored_ids(self) -> set[bytes]:
        """Every object id in a pack index, and for each pack without an index (an upload cut off before its
        index) a stand-in id no object can have, so the collector sees it as garbage (it deletes orphans)."""
        self.refresh()
        with self._lock:
            found = {object_id for object_id, spots in self._where.items() if spots}
            orphans = self._packs_any - self._index_ids - set(self._pending)
        return found | {ORPHAN_MARK + bytes.fromhex(pack_id) for pack_id in orphans}

    def storage_keys(self, object_ids: Iterable[bytes]) -> list[str]:
        packs: set[str] = set()
        for object_id in set(object_ids):
            found = self.locations(object_id)
            if not found:
                self.refresh()
                found = self.locations(object_id)
            packs.update(loc.pack_id for loc in found)
        return [key for pack_id in sorted(packs) for key in (pack_key(pack_id), index_key(pack_id))]

    def delete_unreferenced(self, object_ids: Iterable[bytes], now: datetime) -> Deleted:
        """Delete each pack none of whose objects is live (index first, then pack), and each pack without an
        index (a writer cut off between the two uploads; only ever called with no writer in flight). A pack
        holding a live object stays whole: its dead bytes are reported (repacking is not implemented)."""
        doomed = set(object_ids)
        self.refresh()
        tally = DeleteTally(now)
        dead_kept = partly_live = 0
        with self._lock:
            entries = dict(self._entries)
            orphans = sorted(self._packs_any - self._index_ids - set(self._pending))
            damaged = {pack_id_of(key) for key in self.damaged_indexes}
        for pack_id, listed in sorted(entries.items()):
            dead = [length for object_id, _offset, length in listed if object_id in doomed]
            if len(dead) == len(listed):
                if tally.delete(self.vault, [index_key(pack_id), pack_key(pack_id)]):
                    with self._lock:
                        self._forget(pack_id)
            elif dead:
                partly_live += 1
                dead_kept += sum(dead)
        for pack_id in orphans:
            if pack_id not in damaged:  # an index that cannot be read is not an absent one: keep its pack
                tally.delete(self.vault, [pack_key(pack_id)])
        return tally.result(dead_bytes_kept=dead_kept, partly_live_packs=partly_live)

    def authentic(self, key: str, data: bytes) -> bool:
        """Does ``data`` authenticate as the ``packs/`` object ``key``? An index: as sealed under its name. A pack:
        every object its index lists opens there (a pack no index describes is accepted: reads check each object)."""
        pack_id = pack_id_of(key)
        if pack_id is None:
            return False
        if key.endswith(INDEX_SUFFIX):
            try:
                envelope.open_sealed(self.vault.keys.encryption_key, key.encode(), data, what=key)
            except IntegrityError:
                return False
            return True
        for object_id, offset, length in self.pack_entries(pack_id) or []:
            try:
                envelope.open_sealed(
                    self.vault.keys.encryption_key, object_id, data[offset : offset + length], what=key
                )
            except IntegrityError:
                return False
        return True


def _open_as(opener: Opener[T], what: str, sealed: bytes) -> T:
    return opener(sealed, what)


class _OpenPack:
    """A pack being filled or uploaded: its bytes and entries, readable by other threads meanwhile."""

    def __init__(self) -> None:
        self.pack_id = secrets.token_hex(16)
        self.data = bytearray()
        self.frozen: bytes | None = None  # the whole pack as uploaded: the filling buffer is dropped then
        self.entries: list[tuple[bytes, int, int]] = []
        self.lock = threading.Lock()

    def freeze(self) -> bytes:
        with self.lock:
            if self.frozen is None:
                self.frozen, self.data = bytes(self.data), bytearray()
            return self.frozen

    def append(self, object_id: bytes, sealed: bytes) -> Location:
        with self.lock:
            offset = len(self.data)
            self.data += sealed
            self.entries.append((object_id, offset, len(sealed)))
            return Location(self.pack_id, offset, len(sealed))

    def read(self, offset: int, length: int) -> bytes | None:
        with self.lock:
            whole = self.frozen if self.frozen is not None else self.data
            if offset + length > len(whole):
                return None
            return bytes(whole[offset : offset + length])


class PackWriter(WriteSession):
    """One writer's packs: fill one in memory, upload full ones in the background (bounded), flush at commit."""

    def __init__(self, objects: PackedObjects, retention: Retention | None, keeper: RetentionKeeper | None) -> None:
        self.objects = objects
        self.store = objects.store
        self.retention = retention
        self.keeper = keeper
        self._lock = threading.Lock()
        self._mine: dict[bytes, int] = {}  # objects this session stored -> sealed size
        self._pack_ids: list[str] = []  # every pack this session opened
        self._retained: set[str] = set()  # packs reused by this session, whose retention is (being) extended
        self._current: _OpenPack | None = None
        self._uploads: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(PACKS_IN_FLIGHT)
        self._pool = ThreadPoolExecutor(max_workers=PACKS_IN_FLIGHT, thread_name_prefix="strongroom-pack")

    def stored_size(self, object_id: bytes) -> int | None:
        with self._lock:
            if object_id in self._mine:
                return self._mine[object_id]
        found = self.objects.committed(object_id)
        if found is None:
            return None
        if self.keeper is not None:  # a reused object's pack and index last as long as this point: one HEAD each
            with self._lock:
                first = found.pack_id not in self._retained
                self._retained.add(found.pack_id)
            if first:  # the other threads reusing this pack need not wait: the commit waits for this one
                self.keeper.ensure(pack_key(found.pack_id))
                self.keeper.ensure(index_key(found.pack_id))
        return found.length

    def put(self, object_id: bytes, sealed: bytes) -> bool:
        full = None
        with self._lock:
            if object_id in self._mine:
                return False
            if self._current is None:
                self._current = _OpenPack()
                self._pack_ids.append(self._current.pack_id)
                with self.objects._lock:
                    self.objects._pending[self._current.pack_id] = self._current
            self._current.append(object_id, sealed)
            self._mine[object_id] = len(sealed)
            if len(self._current.data) >= self.objects.pack_size:
                full, self._current = self._current, None
        if full is not None:
            self._upload(full)
        return True

    def _upload(self, pack: _OpenPack) -> None:
        self._slots.acquire()  # at most PACKS_IN_FLIGHT full packs in memory besides the one filling
        try:
            future = self._pool.submit(self._store_pack, pack)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._uploads.append(future)

    def _store_pack(self, pack: _OpenPack) -> None:
        try:
            pid = pack.pack_id
            self.store.put(pack_key(pid), pack.freeze(), if_absent=True, sync=False, retention=self.retention)
            fault_point("write:after-pack")  # crash tests: a pack stored, its index not yet
            sealed = envelope.seal(
                self.objects.vault.keys.encryption_key,
                Kind.PACK_INDEX,
                index_key(pid).encode(),
                encode_pack_index(pid, pack.entries),
            )
            self.store.put(index_key(pid), sealed, if_absent=True, sync=False, retention=self.retention)
            self.objects._cache_index(pid, sealed)
            if self.keeper is not None:
                self.keeper.wrote(pack_key(pid))
                self.keeper.wrote(index_key(pid))
            self.objects._added(pid, list(pack.entries))
        finally:
            self._slots.release()

    def flush(self) -> None:
        """Upload the pack being filled, wait for every upload (an error raises), then make them durable."""
        with self._lock:
            last, self._current = self._current, None
        if last is not None and last.entries:
            self._upload(last)
        with self._lock:
            uploads, self._uploads = self._uploads, []
        for future in uploads:
            future.result()
        self.store.flush()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._current = None
        with self.objects._lock:
            for pack_id in self._pack_ids:  # uploaded ones are gone already; the rest are abandoned
                self.objects._pending.pop(pack_id, None)
