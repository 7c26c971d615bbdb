"""Resource types: one module each, behind :class:`ResourceAdapter`, registered by name."""

from strongroom.adapters.base import (
    BackupContext,
    ResourceAdapter,
    ResourceSpec,
    RestoreContext,
    RestoreRequest,
    RestoreResult,
    adapter_types,
    get_adapter,
    register_adapter,
)

__all__ = [
    "BackupContext",
    "ResourceAdapter",
    "ResourceSpec",
    "RestoreContext",
    "RestoreRequest",
    "RestoreResult",
    "adapter_types",
    "get_adapter",
    "register_adapter",
]
