"""Filling in the data offsets of a pg_dump custom-format archive that was written through a pipe.

``pg_dump --format=custom`` writing to a pipe cannot seek back, so every table-of-contents entry says
"offset not set". A parallel ``pg_restore -j N`` then makes each worker scan the archive from the
start to find its table's data. After the archive has been copied to a file, this module scans the
data blocks once, records where each one starts, and writes those positions into the fixed-size
offset fields of the table of contents — exactly what pg_dump writes when its output is seekable.

Format (``pg_backup_archiver.c``, ``pg_backup_custom.c``; archive versions 1.12 to 1.15):

- header: ``PGDMP``, version major/minor/revision bytes, int size, offset size, format byte;
  compression (an int, or from 1.15 one byte); 7 ints of creation time; 3 strings;
- table of contents: an int count, then per entry: dumpId (int), hadDumper (int), table oid and oid
  (strings), tag, desc (strings), section (int), defn, dropStmt, copyStmt, namespace, tablespace,
  tableam (1.14+), owner, withOids (strings), dependency ids (strings ending with a NULL string),
  then the offset: one flag byte (1 not set, 2 set, 3 no data) and ``offSize`` little-endian bytes;
- data blocks: a type byte (1 data, 3 blobs), the dumpId (int), then length-prefixed pieces ending
  with a zero length (blobs: an oid int before each blob's pieces, a zero oid at the end). Archives
  with large objects are left alone (their binary data could imitate a block boundary).

An int is a sign byte followed by ``intSize`` little-endian bytes; a string is an int length (-1 for
NULL) followed by that many bytes. Anything unexpected leaves the file untouched (``False``): the
restore still works, only without offsets.

:func:`read_toc` reads the table of contents from the front of a stream that cannot seek (a recovery
point's ``dump`` stream), so that a restore can learn which roles the archive names before any data
moves (``adapters/postgres/dump_roles.py``).
"""

from __future__ import annotations

import builtins
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLOCK_DATA = 1
BLOCK_BLOBS = 3
SCAN_BLOCK = 8 << 20
LARGE_OBJECT_ENTRIES = {b"BLOBS", b"BLOB", b"LARGE OBJECTS", b"BLOB DATA"}
OFFSET_NOT_SET = 1
OFFSET_SET = 2
MIN_VERSION = (1, 12)
MAX_VERSION = (1, 15)
# A forged archive could announce a string of gigabytes; no real TOC string (a function body, a view)
# comes near this, and read_toc must not allocate what a length field claims.
MAX_TOC_STRING = 64 << 20


@dataclass(frozen=True)
class TocEntry:
    """One table-of-contents entry: what pg_restore would create, and as whom."""

    dump_id: int
    desc: str  # TABLE, FUNCTION, ACL, DEFAULT ACL, POLICY, ...
    tag: str  # the object's name; ``DATABASE x`` for entries about the database itself
    defn: str  # the SQL pg_restore runs for it
    drop_stmt: str  # empty for entries that are not separately ownable objects (ACL, COMMENT, ...)
    owner: str  # the object's owner (empty when none)
    offset_position: int  # file position of the data offset field
    offset_flag: int


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.int_size = 4
        self.offset_size = 8
        self.size = handle.seek(0, os.SEEK_END)
        handle.seek(0)

    def bytes(self, count: int) -> bytes:
        data = self.handle.read(count)
        if len(data) != count:
            raise ValueError("archive ends early")
        return data

    def byte(self) -> int:
        return self.bytes(1)[0]

    def int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.bytes(self.int_size), "little")
        return -value if sign else value

    def string(self) -> builtins.bytes | None:
        length = self.int()
        return None if length < 0 else self.bytes(length)

    def skip(self, count: builtins.int) -> None:
        if self.handle.seek(count, os.SEEK_CUR) > self.size:
            raise ValueError("archive ends early")

    def tell(self) -> builtins.int:
        return self.handle.tell()


class _StreamReader(_Reader):
    """A reader over a stream that only reads forward (a recovery point's stream): nothing is sought."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.int_size = 4
        self.offset_size = 8
        self.position = 0

    def bytes(self, count: int) -> bytes:
        if count > MAX_TOC_STRING:
            raise ValueError(f"a table-of-contents field of {count} bytes")
        data = super().bytes(count)
        self.position += count
        return data

    def skip(self, count: builtins.int) -> None:
        self.bytes(count)

    def tell(self) -> int:
        return self.position


def read_toc(stream: BinaryIO) -> list[TocEntry] | None:
    """The table of contents at the front of a custom-format archive read from ``stream`` (forward only).

    ``None`` when the archive is not one this understands (another format or version, damaged): the
    caller then learns nothing from it and must not assume the archive names no roles.
    """
    try:
        reader = _StreamReader(stream)
        version = _read_header(reader, uncompressed=False)
        return _read_entries(reader, version)
    except (ValueError, OSError):
        return None


def add_data_offsets(handle: BinaryIO) -> bool:
    """Write the data offsets into an uncompressed custom-format archive open for reading and writing.

    Returns True when the offsets were written, False when the archive is not one this understands.
    """
    try:
        reader = _Reader(handle)
        version = _read_header(reader)
        fields = _read_toc(reader, version)
        blocks = _scan_blocks(reader, reader.tell())
    except (ValueError, OSError):
        return False
    for dump_id, field_position in fields.items():
        if dump_id in blocks:
            handle.seek(field_position)
            handle.write(bytes([OFFSET_SET]) + blocks[dump_id].to_bytes(reader.offset_size, "little"))
    handle.flush()
    return True


def _read_header(reader: _Reader, *, uncompressed: bool = True) -> tuple[int, int]:
    if reader.bytes(5) != MAGIC:
        raise ValueError("not a custom-format archive")
    major, minor, _revision = reader.byte(), reader.byte(), reader.byte()
    version = (major, minor)
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ValueError(f"archive version {major}.{minor}")
    reader.int_size, reader.offset_size = reader.byte(), reader.byte()
    if reader.byte() != FORMAT_CUSTOM:
        raise ValueError("not the custom format")
    compression = reader.byte() if version >= (1, 15) else reader.int()
    if compression != 0 and uncompressed:
        raise ValueError("compressed archive")  # Strongroom's dumps are --compress=0
    for _ in range(7):
        reader.int()
    for _ in range(3):
        reader.string()
    return version


def _read_toc(reader: _Reader, version: tuple[int, int]) -> dict[int, int]:
    """dumpId -> file position of its offset field, for entries whose offset is not set."""
    return _read_toc_all(reader, version, only_unset=True)


def _read_toc_all(reader: _Reader, version: tuple[int, int], *, only_unset: bool = False) -> dict[int, int]:
    fields: dict[int, int] = {}
    for entry in _read_entries(reader, version):
        if entry.desc.encode() in LARGE_OBJECT_ENTRIES:
            raise ValueError("large objects: binary data may hide block boundaries")
        if entry.offset_flag == OFFSET_NOT_SET or not only_unset:
            fields[entry.dump_id] = entry.offset_position
    return fields


def _read_entries(reader: _Reader, version: tuple[int, int]) -> list[TocEntry]:
    entries: list[TocEntry] = []
    for _ in range(reader.int()):
        dump_id = reader.int()
        reader.int()  # hadDumper
        reader.string()  # table oid
        reader.string()  # oid
        tag, desc = _text(reader.string()), _text(reader.string())
        reader.int()  # section
        defn, drop_stmt = _text(reader.string()), _text(reader.string())
        for _ in range(4 if version >= (1, 14) else 3):  # copy, namespace, tablespace, (tableam)
            reader.string()
        owner = _text(reader.string())
        reader.string()  # withOids
        while reader.string() is not None:  # dependency ids, ended by a NULL string
            continue
        position = reader.tell()
        flag = reader.byte()
        reader.skip(reader.offset_size)
        entries.append(TocEntry(dump_id, desc, tag, defn, drop_stmt, owner, position, flag))
    return entries


def _text(value: bytes | None) -> str:
    # Names are in the database's encoding; one that is not UTF-8 comes out with replacement characters,
    # so a role check fails closed (names a role that does not exist) instead of failing to read.
    return "" if value is None else value.decode("utf-8", errors="replace")


def _scan_blocks(reader: _Reader, data_start: int) -> dict[int, int]:
    """dumpId -> file position of its table-data block.

    Walking every length-prefixed piece costs one Python step per row (10 million for pgbench -s 100),
    so the blocks are found by their boundary instead: the zero-length piece that ends the previous
    block, the block type byte and the dumpId. COPY text data never contains a NUL byte, so that
    sequence cannot occur inside table data (archives with large objects are refused earlier).
    """
    size = reader.int_size
    handle = reader.handle
    blocks: dict[int, int] = {}
    handle.seek(data_start)
    first = handle.read(2 + size)
    if len(first) == 2 + size and first[0] == BLOCK_DATA and first[1] == 0:
        blocks[int.from_bytes(first[2:], "little")] = data_start
    boundary = bytes(size + 1) + bytes([BLOCK_DATA, 0])
    record = len(boundary) + size  # the boundary and the dumpId after it
    window_start, window = data_start, b""
    handle.seek(data_start)
    while piece := handle.read(SCAN_BLOCK):  # bounded memory: one block plus a record of overlap
        window += piece
        found = window.find(boundary)
        while 0 <= found <= len(window) - record:
            position = window_start + found + size + 1
            dump_id = int.from_bytes(window[found + len(boundary) : found + record], "little")
            blocks.setdefault(dump_id, position)
            found = window.find(boundary, found + 1)
        keep = min(len(window), record - 1)
        window_start += len(window) - keep
        window = window[len(window) - keep :]
    return blocks


def data_offsets(handle: BinaryIO) -> dict[int, int | None]:
    """dumpId -> data offset recorded in the table of contents (None when not set)."""
    reader = _Reader(handle)
    version = _read_header(reader)
    offsets: dict[int, int | None] = {}
    for dump_id, position in _read_toc_all(reader, version).items():
        handle.seek(position)
        flag = reader.byte()
        value = int.from_bytes(reader.bytes(reader.offset_size), "little")
        offsets[dump_id] = value if flag == OFFSET_SET else None
    return offsets


# Renaming roles in the table of contents (``restore start --role-map``) ------------------------------


class _Recording(_StreamReader):
    """A forward reader that keeps a copy of every byte it reads (the header, copied unchanged)."""

    def __init__(self, handle: BinaryIO) -> None:
        super().__init__(handle)
        self.recorded = bytearray()
        self.recording = True

    def bytes(self, count: int) -> bytes:
        data = super().bytes(count)
        if self.recording:
            self.recorded += data
        return data


class _Encoder:
    def __init__(self, int_size: int) -> None:
        self.int_size = int_size
        self.out = bytearray()

    def int(self, value: int) -> None:
        self.out += bytes([1 if value < 0 else 0]) + abs(value).to_bytes(self.int_size, "little")

    def string(self, value: bytes | None) -> None:
        if value is None:
            self.int(-1)
        else:
            self.int(len(value))
            self.out += value


def rewrite_toc(stream: IO[bytes], owner: Callable[[str], str], definition: Callable[[str, str], str]) -> io.RawIOBase:
    """``stream`` (a custom-format archive) with each entry's owner field passed through ``owner`` and its
    SQL through ``definition(desc, sql)``; everything after the table of contents is passed on unchanged.

    Offsets that were set no longer hold once a field changes length, so they are cleared (pg_restore then
    reads the data blocks in order, as from a pipe). Raises ValueError for an archive this cannot read.
    """
    reader = _Recording(stream)  # type: ignore[arg-type]  # reads forward only: any IO[bytes]
    version = _read_header(reader, uncompressed=False)
    out = _Encoder(reader.int_size)
    out.out += reader.recorded
    reader.recording = False
    count = reader.int()
    out.int(count)
    for _ in range(count):
        out.int(reader.int())  # dumpId
        out.int(reader.int())  # hadDumper
        out.string(reader.string())  # table oid
        out.string(reader.string())  # oid
        tag, desc = reader.string(), reader.string()
        out.string(tag)
        out.string(desc)
        out.int(reader.int())  # section
        defn = reader.string()
        out.string(None if defn is None else definition(_text(desc), _text(defn)).encode())
        for _ in range(5 if version >= (1, 14) else 4):  # dropStmt, copy, namespace, tablespace, (tableam)
            out.string(reader.string())
        entry_owner = reader.string()
        out.string(None if entry_owner is None else owner(_text(entry_owner)).encode())
        out.string(reader.string())  # withOids
        while (dependency := reader.string()) is not None:
            out.string(dependency)
        out.string(None)
        flag = reader.byte()
        offset = reader.bytes(reader.offset_size)
        if flag == OFFSET_SET:
            flag, offset = OFFSET_NOT_SET, bytes(reader.offset_size)
        out.out += bytes([flag]) + offset
    return _Prefixed(bytes(out.out), stream)


class _Prefixed(io.RawIOBase):
    """``prefix``, then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self.prefix = memoryview(prefix)
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.prefix:
            count = min(len(buffer), len(self.prefix))
            buffer[:count] = self.prefix[:count]
            self.prefix = self.prefix[count:]
            return count
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
