"""A real S3 server on loopback for the tests: moto's server mode (``python -m moto.server``) in a subprocess.

One server per test session (fixture ``s3_server``); each test takes its own bucket, plain or with
versioning and Object Lock. moto accepts any credentials, so the tests use a fixed pair from the
environment, as the AWS credential chain of a real deployment would supply them (never in a URL).
Known deviations of moto from AWS S3 are listed in docs/storage.md; tests that touch them say so.

``STRONGROOM_TEST_S3_ENDPOINT=http://host:port`` runs the same tests against an external S3 server instead
(scripts/s3-check.sh sets it for a throwaway Ceph RGW), with the credentials in ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``; nothing is started or stopped then, and moto stays the default.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.ports import free_port

EXTERNAL_ENDPOINT_VARIABLE = "STRONGROOM_TEST_S3_ENDPOINT"
_EXTERNAL_ENDPOINT = os.environ.get(EXTERNAL_ENDPOINT_VARIABLE, "").rstrip("/")
_KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

# The credential chain's environment variables: for moto a fixed pair (any values work), for an external
# server the pair already in the environment; plus what keeps boto3 off the instance metadata address and
# away from the machine's own shared config.
S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "strongroom-test-key",
    "AWS_SECRET_ACCESS_KEY": "strongroom-test-secret",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/strongroom-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/strongroom-test-aws-credentials",
}
if _EXTERNAL_ENDPOINT:
    S3_TEST_ENV.update({name: os.environ.get(name, "") for name in _KEY_VARIABLES})
REGION = "us-east-1"


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes] | None  # None: an external server, not ours to stop
    log: Path | None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def is_moto(self) -> bool:
        """moto (started here), not a real S3 implementation: a test of one of its deviations may ask."""
        return self.process is not None

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=S3_TEST_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self, *, object_lock: bool = False) -> str:
        """A fresh bucket; with ``object_lock`` it has versioning and Object Lock (set at creation, as S3 wants)."""
        name = f"test-{next(self._names)}-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def url(self, bucket: str, prefix: str = "vault", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"endpoint": self.endpoint, "region": REGION, **params}.items())
        return f"s3://{bucket}/{prefix}?{query}"

    def new_store_url(self, *, object_lock: bool = False, prefix: str = "vault", **params: str) -> str:
        return self.url(self.new_bucket(object_lock=object_lock), prefix, **params)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(directory: Path) -> S3Server:
    port = free_port()
    log = directory / f"moto-{port}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = S3Server(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_until_up(process, log, port)
    except AssertionError:
        server.stop()
        raise
    return server


def _wait_until_up(process: subprocess.Popen[bytes], log: Path, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"moto server exited: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("moto server did not start listening")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 for the whole session; the credential chain set in this process.

    With ``STRONGROOM_TEST_S3_ENDPOINT`` set, that server instead, and the AWS credentials already in the
    environment (scripts/s3-check.sh)."""
    if _EXTERNAL_ENDPOINT and not all(S3_TEST_ENV[name] for name in _KEY_VARIABLES):
        raise pytest.UsageError(f"{EXTERNAL_ENDPOINT_VARIABLE} is set: set {' and '.join(_KEY_VARIABLES)} too")
    saved = {name: os.environ.get(name) for name in S3_TEST_ENV}
    os.environ.update(S3_TEST_ENV)
    if _EXTERNAL_ENDPOINT:
        server = S3Server(_EXTERNAL_ENDPOINT, None, None)
    else:
        server = start_s3_server(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
