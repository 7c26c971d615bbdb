"""Peak memory of one large backup stream, measured in a fresh process.

``ru_maxrss`` is a process's high-water mark: read inside a long test run it reports whatever earlier
test peaked highest, so the growth would read 0 whatever the writer does; and on a machine whose kernel
reclaims cold pages (DAMON), a buffered stream's resident peak can stay far below its size. So the probe
measures the peak of memory Python allocates (``tracemalloc``: every bytes object a writer could hold a
stream in), in a fresh process. Run as ``python -m tests.support.memory_probe VAULT_DIR SIZE``; it prints
JSON with two peaks in MiB: ``writer`` (SIZE bytes streamed through :class:`RecoveryPointWriter`) and then
``buffer`` (the same bytes held in memory at once), which shows the measurement sees a buffered stream.
"""

from __future__ import annotations

import io
import json
import sys
import tracemalloc
from pathlib import Path

from strongroom.vault.writer import RecoveryPointWriter
from tests.support.data import mixed_data
from tests.support.vaults import make_vault


class Generated(io.RawIOBase):
    """``total`` bytes, one mixed MiB repeated, without ever holding more than that MiB."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.block = mixed_data(1 << 20, seed=7)

    def readable(self) -> bool:
        return True

    def readinto(self, target) -> int:  # type: ignore[no-untyped-def,override]
        n = min(len(target), self.left, len(self.block))
        target[:n] = self.block[:n]
        self.left -= n
        return n


def peak_mib() -> float:
    """The peak of Python's allocations since the last reset, in MiB (then the peak is reset)."""
    peak = tracemalloc.get_traced_memory()[1] / (1 << 20)
    tracemalloc.reset_peak()
    return peak


def main(vault_dir: Path, size: int) -> dict[str, float]:
    vault = make_vault(vault_dir, average_chunk=64 * 1024)
    tracemalloc.start()
    with RecoveryPointWriter(vault, "big") as writer:
        writer.store_stream("s", io.BufferedReader(Generated(size)))
        writer.commit("res", "test", {})
    writer_peak = peak_mib()
    held = io.BufferedReader(Generated(size)).read()
    buffer_peak = peak_mib()
    assert len(held) == size
    return {"writer": writer_peak, "buffer": buffer_peak}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
