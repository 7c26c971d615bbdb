"""The one error tree of Strongroom.

Every failure a user can meet is a :class:`StrongroomError` subclass with a stable
``code``, a process ``exit_code`` and a ``hint`` that says what to do. Front ends turn
them into one line (CLI) or one JSON shape (API); nothing else should reach a user::

    StrongroomError
    ├── UsageError                 bad input from the user (exit 2)
    │   ├── ConfigError
    │   ├── NotFoundError          unknown resource, recovery point, job, vault
    │   │   └── NoRecoveryPointError  a runbook's selection matches no recovery point
    │   ├── AlreadyExistsError
    │   ├── ListenError            `serve` cannot listen on its --host/--port (in use, not this host's)
    │   ├── RecoveryWindowError    a point-in-time target outside the restorable window
    │   └── RetentionError         a job's retention falls outside the vault lock's range
    ├── AccountError               home missing / not initialised / locked (exit 3)
    │   ├── WrongPassphraseError
    │   └── BusyError              another process holds the apply lock, or a collection the vault (HTTP 503)
    ├── SourceError                the resource cannot be read (exit 4)
    │   └── ToolMissingError       pg_dump, pg_basebackup ... not installed
    ├── TargetError                restore target refused or failed (exit 5)
    │   ├── TargetNotEmptyError
    │   ├── TargetRolesMissingError  roles a logical dump's owners, grants or policies name are missing
    │   ├── TargetLocaleError      the target server cannot hold a logical point's encoding or locale
    │   └── IdentifierInUseError   a DR restore's new identifier is taken
    ├── StorageError               the object store failed (exit 6)
    │   └── StorageFullError       no space left (HTTP 507)
    │       └── RequestUnrecordedError  the catalog has no room to record a request's nonce
    ├── IntegrityError             stored data is damaged or forged (exit 7)
    │   ├── CatalogIntegrityError  a catalog record fails its MAC, or the catalog disagrees with the vault
    │   └── WalConflictError       a WAL file archived again with other content (never overwritten)
    ├── FormatError                a vault object of an unknown format version (exit 7)
    ├── AccessError                who may do what (exit 8)
    │   ├── AuthenticationError    missing, unknown, expired, revoked or wrongly signed credentials
    │   ├── AccessDeniedError      the vault access policy refuses the action
    │   └── VaultLockedError       the vault lock forbids it (retention, lock removal, early deletion)
    ├── RemoteError                another account's endpoint is unreachable or answered nonsense (exit 9)
    │   └── RequestTooLargeError   a request body over its route's limit (HTTP 413)
    ├── HookFailedError            a runbook hook failed or timed out (exit 10)
    └── RestoreTestFailedError     a restore test did not succeed: restore or validation failed, timed out (exit 11)
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Base of every error Strongroom reports to a user."""

    code = "STRONGROOM_ERROR"
    exit_code = 1
    hint = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        if not self.hint:
            return text
        return f"{text}. {self.hint[0].upper()}{self.hint[1:]}"


class UsageError(StrongroomError):
    code = "USAGE"
    exit_code = 2


class ConfigError(UsageError):
    code = "CONFIG"


class NotFoundError(UsageError):
    code = "NOT_FOUND"


class WalFileMissingError(NotFoundError):
    """A WAL file was never archived: the one answer ``wal fetch`` gives PostgreSQL as exit 1 ("no such file")."""

    code = "WAL_FILE_MISSING"


class AlreadyExistsError(UsageError):
    code = "ALREADY_EXISTS"


class ListenError(UsageError):
    code = "LISTEN"


class AccountError(StrongroomError):
    code = "ACCOUNT"
    exit_code = 3


class WrongPassphraseError(AccountError):
    code = "WRONG_PASSPHRASE"
    hint = "Check STRONGROOM_PASSPHRASE (or the passphrase you typed) and try again"


class SourceError(StrongroomError):
    code = "SOURCE"
    exit_code = 4


class ToolMissingError(SourceError):
    code = "TOOL_MISSING"


class TargetError(StrongroomError):
    code = "TARGET"
    exit_code = 5


class TargetNotEmptyError(TargetError):
    code = "TARGET_NOT_EMPTY"


class TargetRolesMissingError(TargetError):
    code = "TARGET_ROLES_MISSING"


class TargetLocaleError(TargetError):
    """The target server cannot create a database with the recovery point's encoding and locale."""

    code = "TARGET_LOCALE"


class StorageError(StrongroomError):
    code = "STORAGE"
    exit_code = 6


class StorageFullError(StorageError):
    code = "STORAGE_FULL"
    hint = "Free space on the vault's disk, then run the command again; nothing was committed"


class RequestUnrecordedError(StorageFullError):
    """An authenticated request refused because the catalog has no room to record its nonce (replay
    refusal cannot be kept, so nothing is done): ``principal_arn`` says who sent it."""

    code = "REQUEST_UNRECORDED"
    hint = "Free space on the account's disk; the destination ended the caller's copy session so GC can run"

    def __init__(self, message: str, *, hint: str | None = None, principal_arn: str = "") -> None:
        super().__init__(message, hint=hint)
        self.principal_arn = principal_arn


class IntegrityError(StrongroomError):
    code = "INTEGRITY"
    exit_code = 7
    hint = "Run 'strongroom verify --read-data' to list every damaged object and recovery point"


class CatalogIntegrityError(IntegrityError):
    code = "CATALOG_INTEGRITY"
    hint = (
        "Run 'strongroom verify' to list every finding; the catalog was edited outside Strongroom or put "
        "back from an older copy: nothing relies on it until it is restored (docs/operations.md)"
    )


class WalConflictError(IntegrityError):
    code = "WAL_CONFLICT"
    hint = (
        "Another cluster with the same system identifier archives into this vault, or the archive was restored "
        "from elsewhere: check 'strongroom wal status' and archive_command on every cluster; nothing was overwritten"
    )


class RecoveryWindowError(UsageError):
    code = "OUTSIDE_RECOVERY_WINDOW"


class FormatError(StrongroomError):
    code = "FORMAT"
    exit_code = 7


class AccessError(StrongroomError):
    code = "ACCESS"
    exit_code = 8


class AuthenticationError(AccessError):
    code = "AUTHENTICATION"


class AccessDeniedError(AccessError):
    code = "ACCESS_DENIED"


class VaultLockedError(AccessError):
    code = "VAULT_LOCKED"


class VaultInUseError(AccessError):
    """``vaults attach``: another home wrote the vault's records recently (docs/vault-format.md §10.5)."""

    code = "VAULT_IN_USE"


class RetentionError(UsageError):
    code = "RETENTION"


class BusyError(AccountError):
    code = "BUSY"


class RemoteError(StrongroomError):
    code = "REMOTE"
    exit_code = 9


class RequestTooLargeError(RemoteError):
    code = "REQUEST_TOO_LARGE"


class HookFailedError(StrongroomError):
    """A command or webhook a runbook step runs did not succeed."""

    code = "HOOK_FAILED"
    exit_code = 10


class RestoreTestFailedError(StrongroomError):
    """``restore-testing start-run``: at least one test's status is FAILED or TIMED_OUT (each is recorded)."""

    code = "RESTORE_TEST_FAILED"
    exit_code = 11
    hint = "see 'strongroom restore-testing list-jobs' for each test's validation message"


class NoRecoveryPointError(NotFoundError):
    code = "NO_RECOVERY_POINT"


class IdentifierInUseError(TargetError):
    code = "IDENTIFIER_IN_USE"


ERRORS_BY_CODE: dict[str, type[StrongroomError]] = {}


def _register(cls: type[StrongroomError]) -> None:
    ERRORS_BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(StrongroomError)
