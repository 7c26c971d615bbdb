"""How the S3 store's request concurrency changes write and read throughput (a quick look, not the bench).

Starts moto's S3 server on 127.0.0.1 (tests/support/s3server.py), writes and reads one recovery point of
random data through the vault writer and reader at several ``concurrency=`` values, and optionally adds a
fixed delay to every request in the client (``--rtt 0.03``) to stand in for a network round trip, which
moto on loopback does not have. Run from the repository root:

    .venv/bin/python bench/s3_concurrency.py --mib 48 --rtt 0.03

Numbers from a 2-core machine are in docs/storage.md ("Performance").
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("STRONGROOM_KDF_PROFILE", "insecure-fast")  # a throwaway vault: key cost is not measured

from tests.support.s3server import S3_TEST_ENV, start_s3_server

from strongroom.store.base import open_store
from strongroom.store.s3 import S3Store
from strongroom.vault import Vault
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.writer import RecoveryPointWriter


def measure(url: str, data: bytes, rtt: float) -> tuple[float, float]:
    store = open_store(url)
    assert isinstance(store, S3Store)
    if rtt:
        store.client.meta.events.register("before-send.s3", lambda **_: time.sleep(rtt))
    vault = Vault.create(store, "bench")
    started = time.monotonic()
    with RecoveryPointWriter(vault, "rp") as writer:
        writer.store_stream("data", io.BytesIO(data))
        manifest = writer.commit("bench", "directory", {})
    written = time.monotonic() - started
    started = time.monotonic()
    with RecoveryPointReader(vault, manifest) as reader:
        assert sum(len(chunk) for chunk in reader.iter_stream("data")) == len(data)
    return written, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=48)
    parser.add_argument("--rtt", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2, 16, 32])
    args = parser.parse_args()
    os.environ.update(S3_TEST_ENV)
    server = start_s3_server(Path(tempfile.mkdtemp()))
    data = os.urandom(args.mib << 20)
    try:
        for concurrency in args.concurrency:
            url = server.new_store_url(concurrency=str(concurrency))
            written, read = measure(url, data, args.rtt)
            print(
                f"concurrency {concurrency:2}: write {args.mib / written:6.1f} MiB/s, read {args.mib / read:6.1f} MiB/s"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
