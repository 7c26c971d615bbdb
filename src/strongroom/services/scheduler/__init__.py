"""The scheduler: fires the rules of applied backup plans, runs and watches their jobs, and sweeps retention.

- ``plans/firing.py`` (pure): a rule's occurrences become schedule runs;
- ``runs.py``: the run and copy-action state machines;
- ``daemon.py``: the lease, the tick, the loop inside ``strongroom serve`` and its graceful stop;
- ``views.py``: what ``strongroom plans`` shows.

docs/scheduler.md tells the whole story.
"""

from strongroom.plans.firing import rule_snapshot
from strongroom.plans.records import RunState, ScheduleRun
from strongroom.services.scheduler.daemon import STOP_GRACE_SECONDS, Scheduler, start_daemon
from strongroom.services.scheduler.views import applied_plans, describe_plan, describe_plans, list_runs

__all__ = [
    "STOP_GRACE_SECONDS",
    "RunState",
    "ScheduleRun",
    "Scheduler",
    "applied_plans",
    "describe_plan",
    "describe_plans",
    "list_runs",
    "rule_snapshot",
    "start_daemon",
]
