"""An object store on S3 or an S3-compatible server (Ceph RGW, MinIO...), through boto3.

URL: ``s3://BUCKET/PREFIX?endpoint=http://host:port&region=us-east-1&addressing=path`` (docs/storage.md).
Credentials come only from the standard AWS chain (environment, shared config and ``profile=``, instance or
container role): a URL with ``user:password@`` or a credential parameter is refused, so no secret reaches the
catalog (which records the URL), a log or a process argument.

boto3 is imported on first use, never when this module is imported: the CLI registers every built-in
store at start-up and must not pay for botocore then.

Guarantees beyond :mod:`strongroom.store.base`:

- ``put`` is atomic by S3 semantics (an object appears whole or not at all) and durable once acknowledged,
  so ``flush`` has nothing to do.
- ``put(if_absent=True)`` sends ``If-None-Match: *``; the server answers 412 when the key exists, so two
  writers of one key have exactly one winner. Where the server does not honour it (found by a probe, or
  ``conditional_writes=false``), HEAD then PUT is used instead: not atomic, see :meth:`S3Store.put`.
- Object Lock: :meth:`S3Store.put` with ``retention`` writes the object under a lock mode and retain-until
  date; :meth:`S3Store.extend_retention` only ever moves a retain-until date later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlparse

from strongroom.errors import ConfigError, NotFoundError, StorageError
from strongroom.store.base import (
    LockMode,
    ObjectStat,
    ObjectStore,
    ObjectVersion,
    RetainedError,
    Retention,
    StoreCapabilities,
    check_key,
    register_store,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

log = logging.getLogger(__name__)
_E = TypeVar("_E", bound=StrEnum)

# A fixed key under the prefix, written with If-None-Match: a 412 on it proves the server honours the
# condition at the cost of one request and no new object. Hidden from list(); vault keys never start with '.'.
PROBE_KEY = ".strongroom-conditional-write-probe"
EMPTY_BODY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"  # MD5 of nothing: the probe's ETag where ETags are MD5s
DEFAULT_CONCURRENCY = 16  # requests a writer or reader keeps in flight: S3 throughput comes from parallelism
MAX_CONCURRENCY = 64
DEFAULT_PACK_SIZE = 16 * 1024 * 1024  # restic's default too: one PUT per 16 MiB of new sealed chunks
MIN_PACK_SIZE = 64 * 1024
MAX_PACK_SIZE = 1024 * 1024 * 1024
RETRY_ATTEMPTS = 8  # botocore 'standard' mode: exponential backoff with jitter on throttling and 5xx
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
# Credential-looking URL parameters get their own refusal (the value is never echoed).
_CREDENTIAL_WORDS = ("key", "secret", "token", "password", "credential", "session", "signature")


class ConditionalWrites(StrEnum):
    AUTO = "auto"  # probe once per process: a server that ignores If-None-Match is detected
    TRUE = "true"  # always send If-None-Match (a server that refuses it is an error)
    FALSE = "false"  # HEAD then PUT (not atomic; docs/storage.md says which keys may rely on it)


class Addressing(StrEnum):
    PATH = "path"
    VIRTUAL = "virtual"
    AUTO = "auto"


@dataclass(frozen=True)
class S3Location:
    """Everything a store URL names; never a credential."""

    bucket: str
    prefix: str = ""  # '' or ending in '/'
    endpoint: str | None = None
    region: str | None = None
    addressing: Addressing = Addressing.AUTO
    profile: str | None = None
    conditional_writes: ConditionalWrites = ConditionalWrites.AUTO
    concurrency: int = DEFAULT_CONCURRENCY
    pack_size: int = DEFAULT_PACK_SIZE  # target size of a pack object in a new (format-2) vault

    @property
    def url(self) -> str:
        """The canonical URL: what the catalog records and listings show."""
        params = {
            "endpoint": self.endpoint,
            "region": self.region,
            "addressing": None if self.addressing == Addressing.AUTO else self.addressing.value,
            "profile": self.profile,
            "conditional_writes": None
            if self.conditional_writes == ConditionalWrites.AUTO
            else self.conditional_writes,
            "concurrency": None if self.concurrency == DEFAULT_CONCURRENCY else str(self.concurrency),
            "pack_size": None if self.pack_size == DEFAULT_PACK_SIZE else str(self.pack_size),
        }
        query = urlencode({k: v for k, v in params.items() if v is not None}, safe=":/")
        return f"s3://{self.bucket}/{self.prefix}" + (f"?{query}" if query else "")

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else "")


_PARAMETERS = ("endpoint", "region", "addressing", "profile", "conditional_writes", "concurrency", "pack_size")
_CREDENTIALS_HINT = (
    "Give credentials through the AWS chain instead: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE or the URL parameter profile=NAME (shared config), or an instance/container role"
)


def parse_s3_url(url: str) -> S3Location:
    """Parse ``s3://BUCKET/PREFIX?...``; refuses credentials and unknown parameters (without echoing them)."""
    parsed = urlparse(url)
    if "@" in parsed.netloc:
        raise ConfigError("an s3:// store URL must not hold credentials (user:password@)", hint=_CREDENTIALS_HINT)
    bucket = parsed.netloc  # as written: legacy bucket names may hold capitals
    if not bucket or ":" in bucket:
        raise ConfigError("an s3:// store URL needs a bucket: s3://BUCKET/PREFIX?endpoint=...&region=...")
    params: dict[str, str] = {}
    for name, value in parse_qsl(parsed.query, keep_blank_values=True):
        lowered = name.lower()
        if lowered not in _PARAMETERS:
            if any(word in lowered for word in _CREDENTIAL_WORDS):
                raise ConfigError(
                    f"an s3:// store URL must not hold credentials (parameter '{name}')", hint=_CREDENTIALS_HINT
                )
            raise ConfigError(f"unknown s3:// store URL parameter '{name}'", hint=f"Use {', '.join(_PARAMETERS)}")
        params[lowered] = value
    prefix = parsed.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except StorageError:
            raise ConfigError(f"'{prefix}' is not a valid prefix for an s3:// store URL") from None
        prefix += "/"
    return S3Location(
        bucket=bucket,
        prefix=prefix,
        endpoint=_endpoint(params.get("endpoint")),
        region=params.get("region") or None,
        addressing=_choice(Addressing, "addressing", params.get("addressing"), Addressing.AUTO),
        profile=params.get("profile") or None,
        conditional_writes=_choice(
            ConditionalWrites, "conditional_writes", params.get("conditional_writes"), ConditionalWrites.AUTO
        ),
        concurrency=_concurrency(params.get("concurrency")),
        pack_size=_pack_size(params.get("pack_size")),
    )


def _endpoint(value: str | None) -> str | None:
    if not value:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"endpoint '{value}' is not an http:// or https:// URL", hint="e.g. endpoint=http://127.0.0.1:9000"
        )
    if "@" in parsed.netloc:
        raise ConfigError("an s3:// store URL must not hold credentials (in its endpoint)", hint=_CREDENTIALS_HINT)
    return value.rstrip("/")


def _choice(kind: type[_E], name: str, value: str | None, default: _E) -> _E:
    if not value:
        return default
    try:
        return kind(value.lower())
    except ValueError:
        raise ConfigError(
            f"{name}={value} is not one of {', '.join(m.value for m in kind)}", hint=f"Fix the {name} parameter"
        ) from None


def _concurrency(value: str | None) -> int:
    if not value:
        return DEFAULT_CONCURRENCY
    if not value.isdigit() or not 1 <= int(value) <= MAX_CONCURRENCY:
        raise ConfigError(f"concurrency={value} is not a number from 1 to {MAX_CONCURRENCY}")
    return int(value)


def _pack_size(value: str | None) -> int:
    """``pack_size=`` in bytes, or with a KiB/MiB suffix: from 64 KiB to 1 GiB."""
    if not value:
        return DEFAULT_PACK_SIZE
    units = {"kib": 1024, "mib": 1024 * 1024, "k": 1024, "m": 1024 * 1024, "": 1}
    lowered = value.lower()
    number, unit = lowered.rstrip("kibm"), lowered[len(lowered.rstrip("kibm")) :]
    if not number.isdigit() or unit not in units or not MIN_PACK_SIZE <= int(number) * units[unit] <= MAX_PACK_SIZE:
        raise ConfigError(
            f"pack_size={value} is not a size from 64KiB to 1024MiB", hint="e.g. pack_size=16MiB (the default)"
        )
    return int(number) * units[unit]


class S3Store(ObjectStore):
    """Objects are S3 objects under ``prefix`` in ``bucket``; one boto3 client, shared by every thread."""

    def __init__(self, location: S3Location) -> None:
        self.location = location
        self._client_lock = threading.Lock()
        self._client: BaseClient | None = None
        self._conditional: bool | None = (
            None
            if location.conditional_writes == ConditionalWrites.AUTO
            else (location.conditional_writes == ConditionalWrites.TRUE)
        )
        self._conditional_replace: bool | None = None if self._conditional is not False else False
        self._quoted_tags = True  # how this server takes an ETag in If-Match (found by the probe)
        self._object_lock: bool | None = None
        self.concurrency = location.concurrency
        self.pack_size = location.pack_size

    # Capabilities ----------------------------------------------------------------------------
    @property
    def capabilities(self) -> StoreCapabilities:
        """``conditional_write`` is what the probe found, or what the URL expects before the first
        ``put(if_absent=True)`` probes (reading capabilities never writes); ``object_lock`` asks the bucket."""
        expected = self.location.conditional_writes != ConditionalWrites.FALSE
        return StoreCapabilities(
            conditional_write=expected if self._conditional is None else self._conditional,
            atomic_replace=True,
            object_lock=self.object_lock_enabled(),
            bulk_removal=False,
        )

    @capabilities.setter
    def capabilities(self, value: StoreCapabilities) -> None:
        raise AttributeError("an S3 store's capabilities come from its bucket")

    def conditional_writes_supported(self) -> bool:
        """Does the server honour ``If-None-Match: *``? Probed once (``conditional_writes=auto``)."""
        if self._conditional is None:
            self._conditional = self._probe_conditional_writes()
        return self._conditional

    def conditional_replace_supported(self) -> bool:
        """Does the server honour ``If-Match`` on a PUT as well as ``If-None-Match``? Probed once per process."""
        if self._conditional_replace is None:
            self._conditional_replace = self.conditional_writes_supported() and self._probe_if_match()
        return self._conditional_replace

    def object_lock_enabled(self) -> bool:
        """Is Object Lock enabled on the bucket (GetObjectLockConfiguration)? Asked once."""
        if self._object_lock is None:
            try:
                answer = self._call(
                    "GetObjectLockConfiguration", self.client.get_object_lock_configuration, Bucket=self.location.bucket
                )
            except _Missing:
                answer = {}
            config = answer.get("ObjectLockConfiguration", {})
            self._object_lock = config.get("ObjectLockEnabled") == "Enabled"
        return self._object_lock

    def versioning_enabled(self) -> bool:
        answer = self._call("GetBucketVersioning", self.client.get_bucket_versioning, Bucket=self.location.bucket)
        return answer.get("Status") == "Enabled"

    @property
    def url(self) -> str:
        return self.location.url

    # Objects ---------------------------------------------------------------------------------
    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, sync: bool = True, retention: Retention | None = None
    ) -> bool:
        """Upload ``data`` as ``key`` (durable when this returns, whatever ``sync`` says).

        ``if_absent`` with conditional writes: ``If-None-Match: *``, a 412 means another writer was first.
        Without them (the fallback), HEAD then PUT: two writers can both see the key absent and both PUT,
        the later replacing the earlier. That is safe for content-addressed keys (chunks and index objects
        under ``chunks/``), whose bytes are equal whenever the key is, but not for keys that must have one
        creator (a vault's ``config`` at creation, future ownership markers): docs/storage.md.

        ``retention`` writes the object under an Object Lock mode and retain-until date (the bucket needs
        Object Lock; a store without it raises :class:`StorageError`).
        """
        args = self._put_args(key, data, retention)
        if not if_absent:
            self._call(f"PUT {key}", self.client.put_object, **args)
            return True
        if not self.conditional_writes_supported():
            if self.head(key) is not None:
                return False
            self._call(f"PUT {key}", self.client.put_object, **args)
            return True
        try:
            self._call(f"PUT {key}", self.client.put_object, IfNoneMatch="*", **args)
        except _PreconditionFailed:
            return False
        return True

    def _put_args(self, key: str, data: bytes, retention: Retention | None) -> dict[str, Any]:
        """A PutObject's arguments; under ``retention``, the Object Lock headers (the bucket must have it)."""
        args: dict[str, Any] = {"Bucket": self.location.bucket, "Key": self._full(key), "Body": data}
        if retention is not None:
            self._require_object_lock()
            args["ObjectLockMode"] = retention.mode.value
            args["ObjectLockRetainUntilDate"] = _whole_second_after(retention.until)
        return args

    def flush(self) -> None:
        """Nothing to do: an acknowledged S3 PUT is durable."""

    def get(self, key: str) -> bytes:
        return self.get_tagged(key)[0]

    def get_tagged(self, key: str) -> tuple[bytes, str | None]:
        try:
            answer = self._call(f"GET {key}", self.client.get_object, Bucket=self.location.bucket, Key=self._full(key))
            body: bytes = self._read_body(key, answer)
        except _Missing:
            raise NotFoundError(f"object {key} not found in {self.location.where}") from None
        return body, answer.get("ETag")

    def replace_if(self, key: str, data: bytes, tag: str | None, *, retention: Retention | None = None) -> str | None:
        """One PUT with ``If-Match: tag`` (or ``If-None-Match: *`` for an absent object); a 412 (or, for
        ``If-Match`` on a key that is gone, a 404) means another version is there: nothing written, None."""
        if not self.conditional_replace_supported():
            raise StorageError(f"{self.location.where} does not honour If-Match: no conditional replace")
        args = self._put_args(key, data, retention)
        args.update({"IfNoneMatch": "*"} if tag is None else {"IfMatch": _tag_form(tag, quoted=self._quoted_tags)})
        try:
            answer = self._call(f"PUT {key}", self.client.put_object, **args)
        except (_PreconditionFailed, _Missing):
            return None
        new_tag: str | None = answer.get("ETag")
        if not new_tag:
            raise StorageError(f"PUT {key}: {self._endpoint_name()} answered without an ETag")
        return new_tag

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """One ranged GET (``Range: bytes=start-end``)."""
        if length <= 0:
            return b""
        try:
            answer = self._call(
                f"GET {key} bytes {start}+{length}",
                self.client.get_object,
                Bucket=self.location.bucket,
                Key=self._full(key),
                Range=f"bytes={start}-{start + length - 1}",
            )
        except _Missing:
            raise NotFoundError(f"object {key} not found in {self.location.where}") from None
        except StorageError as exc:
            if "InvalidRange" in exc.message:  # the range starts past the end: nothing there
                return b""
            raise
        return self._read_body(key, answer)

    def _read_body(self, key: str, answer: dict[str, Any]) -> bytes:
        from botocore.exceptions import BotoCoreError

        try:
            with answer["Body"] as stream:
                data: bytes = stream.read()
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot read {key} from {self.location.where}: {_first_line(exc)}") from None
        return data

    def head(self, key: str) -> int | None:
        try:
            answer = self._call(
                f"HEAD {key}", self.client.head_object, Bucket=self.location.bucket, Key=self._full(key)
            )
        except _Missing:
            return None
        return int(answer["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.prefix + prefix)
        cut = len(self.location.prefix)
        iterator = iter(pages)
        while True:
            try:
                page = self._call("LIST", next, iterator)
            except StopIteration:
                return
            except _Missing:
                raise StorageError(f"bucket {self.location.bucket} does not exist at {self._endpoint_name()}") from None
            for item in page.get("Contents", ()):
                key = item["Key"][cut:]
                if key != PROBE_KEY:
                    yield key

    def delete(self, key: str) -> None:
        """DeleteObject: idempotent. On a versioned bucket it adds a delete marker (locked versions stay)."""
        try:
            self._call(f"DELETE {key}", self.client.delete_object, Bucket=self.location.bucket, Key=self._full(key))
        except _Missing:
            return

    # Object Lock -----------------------------------------------------------------------------
    def retention(self, key: str) -> Retention | None:
        """The Object Lock retention of the current version of ``key``, or None when it has none.

        Read from HeadObject's lock headers (they need s3:GetObjectRetention, as GetObjectRetention does):
        one call that every S3 server here answers (moto has no GetObjectRetention)."""
        found = self.stat(key)
        if found is None:
            raise NotFoundError(f"object {key} not found in {self.location.where}")
        return found.retention

    def stat(self, key: str) -> ObjectStat | None:
        """One HeadObject: the size and the lock headers of the current version."""
        try:
            answer = self._call(
                f"HEAD {key}", self.client.head_object, Bucket=self.location.bucket, Key=self._full(key)
            )
        except _Missing:
            return None
        return ObjectStat(int(answer["ContentLength"]), _lock_headers(answer))

    def extend_retention(self, key: str, wanted: Retention, *, current: ObjectStat | None = None) -> Retention:
        """Make ``key``'s retention at least ``wanted``: a later date and the stronger mode win, so a
        retention is never shortened nor weakened (COMPLIANCE never becomes GOVERNANCE) by this call,
        whatever the server would allow. Returns the retention the object has afterwards."""
        self._require_object_lock()
        wanted = Retention(wanted.mode, _whole_second_after(wanted.until))
        have = current.retention if current is not None else self.retention(key)
        target = wanted if have is None else have.at_least(wanted)
        if target == have:
            return have
        upgrade = have is not None and have.mode is LockMode.GOVERNANCE and target.mode is LockMode.COMPLIANCE
        try:
            self._put_retention(key, target, bypass_governance=upgrade)
        except StorageError:
            if not upgrade:
                raise
            # S3 and Ceph RGW treat GOVERNANCE -> COMPLIANCE as changing a governance lock: it needs
            # s3:BypassGovernanceRetention. Without it the date is still extended, under GOVERNANCE.
            log.warning(
                "%s: no right to turn GOVERNANCE into COMPLIANCE (s3:BypassGovernanceRetention); kept GOVERNANCE", key
            )
            target = Retention(LockMode.GOVERNANCE, target.until)
            if target == have:
                return have
            self._put_retention(key, target, bypass_governance=False)
        return target

    def _put_retention(self, key: str, retention: Retention, *, bypass_governance: bool) -> None:
        extra = {"BypassGovernanceRetention": True} if bypass_governance else {}
        self._call(
            f"PUT retention of {key}",
            self.client.put_object_retention,
            Bucket=self.location.bucket,
            Key=self._full(key),
            Retention={"Mode": retention.mode.value, "RetainUntilDate": retention.until},
            **extra,
        )

    # Versions --------------------------------------------------------------------------------
    def versions(self, prefix: str = "") -> Iterator[ObjectVersion]:
        """ListObjectVersions: every version and delete marker under ``prefix``, newest first per key."""
        paginator = self.client.get_paginator("list_object_versions")
        pages = iter(paginator.paginate(Bucket=self.location.bucket, Prefix=self.location.prefix + prefix))
        cut = len(self.location.prefix)
        while True:
            try:
                page = self._call("LIST versions", next, pages)
            except StopIteration:
                return
            except _Missing:
                raise StorageError(f"bucket {self.location.bucket} does not exist at {self._endpoint_name()}") from None
            for marker, items in ((False, page.get("Versions", ())), (True, page.get("DeleteMarkers", ()))):
                for item in items:
                    key = item["Key"][cut:]
                    if key != PROBE_KEY:
                        yield ObjectVersion(
                            key, item["VersionId"], item["IsLatest"], marker, _utc(item["LastModified"]),
                            int(item.get("Size", 0)),
                        )  # fmt: skip

    def get_version(self, key: str, version_id: str) -> bytes:
        try:
            answer = self._call(
                f"GET {key} version {version_id}",
                self.client.get_object,
                Bucket=self.location.bucket,
                Key=self._full(key),
                VersionId=version_id,
            )
        except _Missing:
            raise NotFoundError(f"version {version_id} of {key} not found in {self.location.where}") from None
        return self._read_body(key, answer)

    def version_retention(self, key: str, version_id: str) -> Retention | None:
        try:
            answer = self._call(
                f"HEAD {key} version {version_id}",
                self.client.head_object,
                Bucket=self.location.bucket,
                Key=self._full(key),
                VersionId=version_id,
            )
        except _Missing:
            return None
        return _lock_headers(answer)

    def delete_version(self, key: str, version_id: str) -> None:
        """DeleteObject with a version id: gone for good, unless S3 refuses it (under retention)."""
        try:
            self._call(
                f"DELETE {key} version {version_id}",
                self.client.delete_object,
                Bucket=self.location.bucket,
                Key=self._full(key),
                VersionId=version_id,
            )
        except _Missing:
            return
        except StorageError as exc:
            if "access denied" in exc.message:
                raise RetainedError(f"{key} is under retention: S3 refused to delete it") from None
            raise

    def purge(self, key: str) -> None:
        """Delete every version and delete marker of ``key`` (on an unversioned bucket: the object)."""
        for version in [v for v in self.versions(key) if v.key == key]:
            self.delete_version(key, version.version_id)

    def check_vault_lock_support(self) -> None:
        """A locked vault on S3 needs a bucket with versioning and Object Lock: the lock is S3's, not ours."""
        missing = [
            what
            for what, present in (
                ("versioning", self.versioning_enabled()),
                ("Object Lock", self.object_lock_enabled()),
            )
            if not present
        ]
        if missing:
            raise ConfigError(
                f"bucket {self.location.bucket} has no {' and no '.join(missing)}: a locked vault on S3 needs both",
                hint="Create a bucket with Object Lock enabled at creation (that turns versioning on) and put the "
                "vault there: docs/storage.md",
            )

    def _require_object_lock(self) -> None:
        if not self.object_lock_enabled():
            raise StorageError(
                f"bucket {self.location.bucket} has no Object Lock",
                hint="Create a bucket with Object Lock enabled (it turns on versioning): docs/storage.md",
            )

    # The client and its errors ------------------------------------------------------------------
    @property
    def client(self) -> BaseClient:
        with self._client_lock:
            if self._client is None:
                self._client = _make_client(self.location)
            return self._client

    def _full(self, key: str) -> str:
        check_key(key)
        return self.location.prefix + key

    def _endpoint_name(self) -> str:
        return self.location.endpoint or f"AWS S3 ({self.location.region or 'default region'})"

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one client call; botocore's exceptions become one-line Strongroom errors (never a traceback)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return function(*args, **kwargs)
        except ClientError as exc:
            raise self._client_error(what, exc) from None
        except BotoCoreError as exc:
            raise self._transport_error(exc) from None

    def _client_error(self, what: str, exc: Any) -> Exception:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        bucket = self.location.bucket
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket {bucket} does not exist at {self._endpoint_name()}",
                hint="Create it first (with versioning and Object Lock for a locked vault): docs/storage.md",
            )
        if code in ("NoSuchKey", "NoSuchVersion", "404", "NotFound", "NoSuchObjectLockConfiguration") or (
            status == 404 and code != "NoSuchBucket"
        ):
            return _Missing(code)
        if code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or status == 412:
            return _PreconditionFailed(code)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden") or status == 403:
            return StorageError(
                f"{what}: access denied to bucket {bucket} at {self._endpoint_name()} ({code})",
                hint="Check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID...) and the bucket's policy",
            )
        message = str(error.get("Message", "")).splitlines()[0] if error.get("Message") else ""
        return StorageError(f"{what} on bucket {bucket} failed: {code or status} {message}".rstrip())

    def _transport_error(self, exc: Any) -> Exception:
        from botocore.exceptions import (
            ConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return ConfigError(f"no AWS credentials found for {self.location.where}", hint=_CREDENTIALS_HINT)
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            return StorageError(
                f"cannot reach {self._endpoint_name()}: {_first_line(exc)}",
                hint="Check the endpoint= parameter and the network; the request was retried",
            )
        return StorageError(f"S3 request to {self._endpoint_name()} failed: {_first_line(exc)}")

    def _probe_conditional_writes(self) -> bool:
        """PUT the probe key with If-None-Match twice at most: a 412 proves the server honours it."""
        for _ in range(2):
            try:
                self._call(
                    "conditional write probe",
                    self.client.put_object,
                    Bucket=self.location.bucket,
                    Key=self.location.prefix + PROBE_KEY,
                    Body=b"",
                    IfNoneMatch="*",
                )
            except _PreconditionFailed:
                return True
            except StorageError as exc:
                if "NotImplemented" in exc.message or "InvalidArgument" in exc.message:
                    break
                raise
        log.warning("%s does not honour If-None-Match; using HEAD then PUT (docs/storage.md)", self._endpoint_name())
        return False

    def _probe_if_match(self) -> bool:
        """Does the server honour ``If-Match`` on a PUT, and in which form does it take an ETag? Ceph RGW 16
        matches only the unquoted hex, and never on a versioned bucket; AWS and moto take either. On the probe
        key (empty after the If-None-Match probe): an ``If-Match`` no object has must fail (412, or 404: no
        such key) and the empty body's own ETag must match (a bucket whose ETags are not MD5s, SSE-KMS, gets
        one more PUT to learn the probe's tag). A server that ignores the header only rewrites the empty probe."""
        if self._put_probe(if_match='"strongroom-probe-matches-no-object"'):
            log.warning(
                "%s does not honour If-Match; a vault's catalog records are guarded by reads (docs/storage.md)",
                self._endpoint_name(),
            )
            return False
        for quoted in (False, True):
            if self._put_probe(if_match=_tag_form(EMPTY_BODY_ETAG, quoted=quoted)):
                self._quoted_tags = quoted
                return True
        tag = self._put_probe(if_match=None)
        for quoted in (False, True):
            if tag and self._put_probe(if_match=_tag_form(tag, quoted=quoted)):
                self._quoted_tags = quoted
                return True
        log.warning(
            "%s refuses If-Match even with the right ETag; catalog records are guarded by reads", self._endpoint_name()
        )
        return False

    def _put_probe(self, *, if_match: str | None) -> str | None:
        """PUT the empty probe object (``If-Match`` when given): its new ETag, or None when the condition failed."""
        extra = {} if if_match is None else {"IfMatch": if_match}
        try:
            answer = self._call(
                "conditional replace probe",
                self.client.put_object,
                Bucket=self.location.bucket,
                Key=self.location.prefix + PROBE_KEY,
                Body=b"",
                **extra,
            )
        except (_PreconditionFailed, _Missing):
            return None
        except StorageError as exc:
            if "NotImplemented" in exc.message or "InvalidArgument" in exc.message:
                return None
            raise
        return str(answer.get("ETag") or "") or None


class _Missing(Exception):
    """A 404 from the server: turned into None, NotFoundError or nothing by the caller."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class _PreconditionFailed(Exception):
    """A 412: an If-None-Match condition failed (the key exists)."""


def _make_client(location: S3Location) -> BaseClient:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    addressing = location.addressing
    if addressing == Addressing.AUTO and location.endpoint:
        addressing = Addressing.PATH  # S3-compatible servers on an IP or a single host name
    config = Config(
        region_name=location.region,
        retries={"mode": "standard", "total_max_attempts": RETRY_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=location.concurrency + 4,
        s3={"addressing_style": addressing.value},
    )
    try:
        session = boto3.session.Session(profile_name=location.profile)
        return session.client("s3", endpoint_url=location.endpoint, config=config)
    except BotoCoreError as exc:  # ProfileNotFound, a broken shared config...
        raise ConfigError(f"cannot set up the S3 client for {location.where}: {_first_line(exc)}") from None


def _tag_form(tag: str, *, quoted: bool) -> str:
    bare = tag.strip('"')
    return f'"{bare}"' if quoted else bare


def _whole_second_after(moment: datetime) -> datetime:
    """S3 keeps retain-until dates to the second: round up, so a retention is never a fraction short."""
    whole = moment.astimezone(UTC).replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def _lock_headers(answer: dict[str, Any]) -> Retention | None:
    mode, until = answer.get("ObjectLockMode"), answer.get("ObjectLockRetainUntilDate")
    if not mode or until is None:
        return None
    return Retention(LockMode(mode), _utc(until))


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _from_url(url: str) -> ObjectStore:
    return S3Store(parse_s3_url(url))


register_store("s3", _from_url)
