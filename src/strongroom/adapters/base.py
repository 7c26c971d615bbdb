"""The interface every resource type implements, and the registry that finds them by name.

An adapter turns a live resource into named byte streams of a recovery point (``backup``) and
turns those streams back into a *new* resource (``restore``). It never sees keys, stores or the
catalog: it writes through :class:`BackupContext` and reads through :class:`RestoreContext`.

Rules for adapters:

- stream, never stage a full copy: feed pipes and files straight into ``ctx.writer``;
- never put a password in a process argument; pass secrets through the environment;
- restore only into something new; refuse a non-empty target unless ``allow_non_empty``;
- raise :mod:`strongroom.errors` classes with one clear line and a hint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from strongroom.errors import ConfigError
from strongroom.vault.reader import RecoveryPointReader
from strongroom.vault.writer import RecoveryPointWriter


@dataclass(frozen=True)
class ResourceSpec:
    """A registered resource: what to back up and how to reach it (never a password)."""

    id: str
    type: str
    settings: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class BackupContext:
    writer: RecoveryPointWriter
    temp_dir: Path  # scratch space on the account's disk, removed after the job
    previous: RecoveryPointReader | None = None  # last COMPLETED recovery point of this resource
    environment: dict[str, str] = field(default_factory=dict)  # extra env for tools (e.g. PGPASSWORD)


@dataclass
class RestoreContext:
    reader: RecoveryPointReader
    temp_dir: Path
    home: Path  # the account home; adapters keep restored clusters etc. under it by default
    progress: Callable[[int], None] | None = None
    environment: dict[str, str] = field(default_factory=dict)
    # The recovery point arrived through a copy (from another vault or account): what it says about
    # privilege (set-id bits) is not trusted unless the operator asks (option ``preserve_special``).
    from_copy: bool = False


@dataclass
class RestoreForecast:
    """What a dry run found about a restore's target: problems, and what will exist there afterwards."""

    problems: list[str] = field(default_factory=list)
    databases: list[str] | None = None  # None: not known before the run
    roles: list[str] | None = None

    def outputs(self) -> dict[str, Any]:
        predicted: dict[str, Any] = {}
        if self.databases is not None:
            predicted["known_databases"] = sorted(set(self.databases))
        if self.roles is not None:
            predicted["known_roles"] = sorted(set(self.roles))
        return predicted


@dataclass(frozen=True)
class RestoreRequest:
    target: str | None = None  # a URI or a path, by resource type
    target_identifier: str | None = None  # a new name (postgres-cluster: the new cluster)
    port: int | None = None
    allow_non_empty: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreResult:
    target: str  # what was created, for people: a URI, a path, an identifier
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Endpoint:
    """Where a restored resource answers, as a runbook's later steps use it (``${steps.restore.port}``)."""

    host: str
    port: int
    dsn: str
    dbname: str | None
    login: str | None
    extra: dict[str, Any] = field(default_factory=dict)  # type-specific outputs (data_directory, ...)

    def as_outputs(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "dsn": self.dsn,
            "dbname": self.dbname,
            "login": self.login,
            **self.extra,
        }


class RunbookRestore(Protocol):
    """The fields of a runbook's ``restore`` step an adapter turns into a :class:`RestoreRequest`."""

    @property
    def target(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...
    @property
    def jobs(self) -> int | None: ...
    @property
    def no_owners(self) -> bool: ...
    @property
    def no_privileges(self) -> bool: ...
    @property
    def create_roles(self) -> bool: ...
    @property
    def role_map(self) -> dict[str, str]: ...
    @property
    def encoding(self) -> str | None: ...
    @property
    def locale(self) -> str | None: ...
    @property
    def trust_restored_config(self) -> bool: ...


class ResourceAdapter(ABC):
    type_name: ClassVar[str]
    description: ClassVar[str] = ""
    supports_runbooks: ClassVar[bool] = False  # a DR runbook's restore step may restore this type

    @abstractmethod
    def validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Check and normalise settings given to ``resources add``; raise ConfigError."""

    @abstractmethod
    def backup(self, resource: ResourceSpec, ctx: BackupContext) -> dict[str, Any]:
        """Write the resource's streams into ``ctx.writer``; return metadata for the manifest."""

    @abstractmethod
    def restore(self, metadata: dict[str, Any], ctx: RestoreContext, request: RestoreRequest) -> RestoreResult:
        """Recreate the resource from ``ctx.reader`` as something new described by ``request``."""

    def restore_target_in_use(self, request: RestoreRequest, home: Path) -> str | None:
        """Why ``request``'s target cannot be created now (one line), or None when it is free."""
        raise ConfigError(
            f"resource type {self.type_name} does not support restores in a runbook",
            hint="runbooks restore postgres and postgres-cluster recovery points",
        )

    def discard_restore(self, request: RestoreRequest, home: Path, details: dict[str, Any]) -> list[str]:
        """Remove what a restore to ``request`` made (a retried or rehearsed restore); what was removed."""
        raise ConfigError(f"resource type {self.type_name} does not support restores in a runbook")

    def runbook_restore_request(
        self, step: RunbookRestore, identifier: str, original: ResourceSpec | None
    ) -> RestoreRequest:
        """The request a runbook's restore ``step`` makes for the new ``identifier``; ``original`` is the
        resource the point was taken of, when this account still has it."""
        raise ConfigError(
            f"resource type {self.type_name} does not support restores in a runbook",
            hint="restore it with 'strongroom restore start'",
        )

    def restored_endpoint(self, result: dict[str, Any]) -> Endpoint:
        """Where the resource a restore job made (its ``result``) answers."""
        raise ConfigError(f"resource type {self.type_name} does not support restores in a runbook")

    def restore_location(self, request: RestoreRequest, home: Path) -> dict[str, Any]:
        """Where ``request`` would put the restored resource, for a dry run's predicted outputs."""
        return {}

    def forecast_restore(
        self, request: RestoreRequest, reader: RecoveryPointReader | None, metadata: dict[str, Any]
    ) -> RestoreForecast:
        """A dry run's checks of ``request`` against the real target, before anything moves: what the real
        restore would trip over, and what will exist there. ``reader`` opens the point (None: it is in another
        account, not readable yet); ``metadata`` is what the catalog records of it."""
        return RestoreForecast()

    def restore_caveat(self, request: RestoreRequest) -> str:
        """What a dry run should say about ``request`` beyond "restore as a new X" (", trusting ...")."""
        return ""


_registry: dict[str, type[ResourceAdapter]] = {}


def register_adapter(cls: type[ResourceAdapter]) -> type[ResourceAdapter]:
    _registry[cls.type_name] = cls
    return cls


BUILTIN_MODULES = {
    "postgres": "postgres.logical",
    "postgres-cluster": "postgres.cluster",
    "directory": "directory",
    "sqlite": "sqlite",
}


def _load_builtin_adapters(*type_names: str) -> None:
    """Import the modules of the named built-in types (all when none is named); each registers itself."""
    import importlib

    for type_name in type_names or tuple(BUILTIN_MODULES):
        module = BUILTIN_MODULES.get(type_name)
        if module is not None and type_name not in _registry:
            importlib.import_module(f"strongroom.adapters.{module}")


def get_adapter(type_name: str) -> ResourceAdapter:
    _load_builtin_adapters(type_name)
    cls = _registry.get(type_name)
    if cls is None:
        _load_builtin_adapters()
        known = ", ".join(sorted(_registry)) or "none"
        raise ConfigError(f"unknown resource type '{type_name}'", hint=f"Known types: {known}")
    return cls()


def adapter_types() -> list[str]:
    _load_builtin_adapters()
    return sorted(_registry)


def runbook_types() -> list[str]:
    """The types a runbook's restore step restores, in the order messages name them."""
    _load_builtin_adapters()
    return sorted((name for name, cls in _registry.items() if cls.supports_runbooks), reverse=True)
