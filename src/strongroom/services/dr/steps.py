"""Step types by name (``type:`` in a runbook) and their handlers."""

from __future__ import annotations

from strongroom.services.dr.adopt import AdoptResource
from strongroom.services.dr.context import StepHandler
from strongroom.services.dr.credentials import RotateCredentials, UpdateSecret
from strongroom.services.dr.hooks import HttpCall, RestartApp, RunCommand
from strongroom.services.dr.restore import Restore, WaitHealthy
from strongroom.services.dr.select import SelectRecoveryPoint
from strongroom.services.dr.verify_sql import VerifySql

HANDLERS: dict[str, StepHandler] = {
    "select_recovery_point": SelectRecoveryPoint(),
    "restore": Restore(),
    "wait_healthy": WaitHealthy(),
    "update_secret": UpdateSecret(),
    "rotate_credentials": RotateCredentials(),
    "adopt_resource": AdoptResource(),
    "run": RunCommand(),
    "http": HttpCall(),
    "restart_app": RestartApp(),
    "verify_sql": VerifySql(),
}
