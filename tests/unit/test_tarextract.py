"""The restore-side tar extractor: what it writes, what it refuses."""

from __future__ import annotations

import io
import os
import random
import stat
import tarfile
from pathlib import Path

import pytest

from strongroom.adapters.postgres.tar import extract
from strongroom.errors import IntegrityError


def member(name: str, data: bytes | None = None, *, mode: int = 0o600, mtime: int = 1_700_000_000,
           kind: bytes = tarfile.REGTYPE) -> tuple[tarfile.TarInfo, bytes | None]:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if data is None and kind == tarfile.REGTYPE else kind
    info.mode, info.mtime = mode, mtime
    if data is not None:
        info.size = len(data)
    return info, data


def archive(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def pieces(data: bytes, seed: int = 1) -> list[bytes]:
    """The tar in pieces of random sizes, as chunks cut it (headers and files split anywhere)."""
    rng, out, at = random.Random(seed), [], 0
    while at < len(data):
        step = rng.choice([1, 7, 511, 512, 513, 4096, 100_000])
        out.append(data[at : at + step])
        at += step
    return out


def test_files_and_directories_land_with_their_content_modes_and_mtimes(tmp_path: Path) -> None:
    rng = random.Random(3)
    big, long_name = rng.randbytes(300_001), "base/" + "n" * 150 + "/file"
    data = archive(
        member("base/", mode=0o700, mtime=1_600_000_000),
        member("base/1/", mode=0o700),
        member("base/1/112", big, mode=0o600, mtime=1_650_000_000),
        member("PG_VERSION", b"15\n", mode=0o644),
        member("empty", b""),
        member(long_name, b"long names are GNU records"),
    )
    names = extract(pieces(data), tmp_path / "out")
    assert names == ["base", "base/1", "base/1/112", "PG_VERSION", "empty", long_name]
    root = tmp_path / "out"
    assert (root / "base/1/112").read_bytes() == big and (root / "PG_VERSION").read_bytes() == b"15\n"
    assert (root / long_name).read_bytes() == b"long names are GNU records"
    assert (root / "empty").stat().st_size == 0
    assert stat.S_IMODE((root / "PG_VERSION").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "base/1/112").stat().st_mode) == 0o600
    assert (root / "base/1/112").stat().st_mtime == 1_650_000_000
    assert (root / "base").stat().st_mtime == 1_600_000_000


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (member("../outside", b"x"), "holds an unsafe entry '../outside'"),
        (member("/etc/evil", b"x"), "holds an unsafe entry '/etc/evil'"),
        (member("link", b"", kind=tarfile.SYMTYPE), "holds an unsafe entry 'link'"),
        (member("hard", b"", kind=tarfile.LNKTYPE), "holds an unsafe entry 'hard'"),
        (member("fifo", b"", kind=tarfile.FIFOTYPE), "holds an unsafe entry 'fifo'"),
        (member("sparse", b"", kind=tarfile.GNUTYPE_SPARSE), "holds an unsafe entry 'sparse'"),
        (member("contiguous", b"x", kind=tarfile.CONTTYPE), "holds an unsafe entry 'contiguous'"),
        (member("a/../../b", b"x"), "holds an unsafe entry 'a/../../b'"),
    ],
)
def test_anything_but_files_and_directories_inside_the_root_is_refused(
    bad: tuple[tarfile.TarInfo, bytes], message: str, tmp_path: Path
) -> None:
    if bad[0].type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        bad[0].linkname = "/etc/passwd"
    with pytest.raises(IntegrityError) as refused:
        extract([archive(member("ok", b"fine"), bad)], tmp_path / "out", what="the tar")
    assert refused.value.message == f"the tar {message}"
    assert not (tmp_path / "outside").exists() and not (tmp_path / "out" / "link").exists()


def test_pax_headers_and_damage_are_refused(tmp_path: Path) -> None:
    pax = archive(member("x" * 120, b"pax"), fmt=tarfile.PAX_FORMAT)
    with pytest.raises(IntegrityError, match="unsafe entry"):
        extract([pax], tmp_path / "pax")
    damaged = bytearray(archive(member("file", b"data")))
    damaged[148] ^= 0x01  # the header checksum
    with pytest.raises(IntegrityError, match="damaged header"):
        extract([bytes(damaged)], tmp_path / "damaged")


def test_a_cut_tar_a_repeated_file_and_a_file_under_a_file_are_refused(tmp_path: Path) -> None:
    whole = archive(member("file", b"x" * 5000))
    with pytest.raises(IntegrityError, match="ends in the middle of an entry"):
        extract([whole[:2000]], tmp_path / "cut")
    with pytest.raises(IntegrityError, match="holds file twice"):
        extract([archive(member("file", b"1"), member("file", b"2"))], tmp_path / "twice")
    with pytest.raises(IntegrityError, match="puts file/inner under a file"):
        extract([archive(member("file", b"1"), member("file/inner", b"2"))], tmp_path / "under")
    with pytest.raises(IntegrityError, match="has data after its end"):
        extract([whole + b"trailing garbage"], tmp_path / "after")


def test_no_descriptor_stays_open_after_a_refusal(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for attempt in range(5):
        with pytest.raises(IntegrityError):
            extract([archive(member("big", b"y" * 200_000))[:100_000]], tmp_path / f"cut{attempt}")
    assert len(os.listdir("/proc/self/fd")) == before
