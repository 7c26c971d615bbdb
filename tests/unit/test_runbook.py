"""Runbooks: reading (every problem with its file and line), step conditions, run-time references, and
the choice of a recovery point."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from strongroom.config.runbook import SelectRecoveryPointStep, load_runbook
from strongroom.config.variables import AccountIdentity
from strongroom.errors import ConfigError
from strongroom.services.dr.context import resolve_runtime
from strongroom.services.dr.select import _choose

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mavis" / "dr-runbook.yaml"
IDENTITY = AccountIdentity("123456789012", "local")


def select_step(**fields: Any) -> SelectRecoveryPointStep:
    return SelectRecoveryPointStep(name="select", type="select_recovery_point", **fields)


def load(path: Path, *cli_vars: str):
    return load_runbook(path, identity=IDENTITY, cli_vars=list(cli_vars), var_files=[])


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runbook.yaml"
    path.write_text(text)
    return path


def test_the_example_reproduces_the_seeds_steps_in_order() -> None:
    runbook = load(EXAMPLE)
    assert [s.type for s in runbook.steps] == [
        "select_recovery_point",
        "restore",
        "wait_healthy",
        "update_secret",
        "rotate_credentials",
        "run",
        "adopt_resource",
        "run",
        "run",
        "restart_app",
        "verify_sql",
    ]
    enabled = {s.name: s.enabled for s in runbook.steps}
    assert enabled["credentials"] and not enabled["managed-credentials"]
    assert runbook.steps[1].fields.target_identifier == "mavis-production-restored"

    managed = load(EXAMPLE, "CREDENTIALS=managed", "ENV=staging")
    enabled = {s.name: s.enabled for s in managed.steps}
    assert not enabled["credentials"] and enabled["managed-credentials"]
    assert managed.steps[1].fields.target_identifier == "mavis-staging-restored"


BASE = """runbook: test
variables:
  X: {default: one}
steps:
  - name: select
    type: select_recovery_point
    resource: db
"""


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "  - name: b\n    type: teleport\n",
            ":9: steps[1].type: unknown step type 'teleport'; use one of select_recovery_point",
        ),
        ("  - name: select\n    type: wait_healthy\n", ":8: steps[1].name: another step is already named 'select'"),
        ("  - name: r\n    type: restore\n    target_identifier: Bad_Name\n", ":10: steps[1].target_identifier:"),
        (
            "  - name: r\n    type: restore\n    target_identifier: x\n    port: ${steps.later.port}\n  - name: later\n"
            "    type: wait_healthy\n",
            "${steps.later.port}: use ${steps.NAME.FIELD} with the name of an earlier step",
        ),
        (
            "  - name: v\n    type: verify_sql\n    checks: []\n",
            ":10: steps[1].checks: List should have at least 1 item",
        ),
        ("  - name: r\n    type: run\n    command: [echo, '${secret.db.password}']\n", "only in env, headers and url"),
        ("  - name: r\n    type: run\n    command: [echo]\n    when: {Y: z}\n", "variable 'Y' is not declared"),
    ],
)
def test_problems_are_named_with_file_and_line(tmp_path: Path, extra: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        load(write(tmp_path, BASE + extra))
    assert problem in error.value.message
    assert "runbook.yaml:" in error.value.message


def test_a_time_without_a_zone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give a time zone"):
        load(write(tmp_path, BASE + "    at_or_before: '2026-11-25T09:00:00'\n"))


def test_runbooks_have_no_sensitive_variables(tmp_path: Path) -> None:
    text = BASE.replace("X: {default: one}", "X: {default: one, sensitive: true}")
    with pytest.raises(ConfigError, match="runbooks have no sensitive variables"):
        load(write(tmp_path, text))


def test_secret_references_stay_for_the_moment_of_use(tmp_path: Path) -> None:
    runbook = load(
        write(
            tmp_path,
            BASE + "  - name: r\n    type: run\n    command: [deploy]\n"
            "    env: {TOKEN: '${secret.ci.token}', WHO: '${var.X}'}\n",
        )
    )
    assert runbook.steps[1].fields.env == {"TOKEN": "${secret.ci.token}", "WHO": "one"}


def test_a_secret_name_may_be_built_from_variables_and_hooks_name_what_they_pass(tmp_path: Path) -> None:
    runbook = load(
        write(
            tmp_path,
            BASE + "  - name: r\n    type: restart_app\n    command: [deploy]\n"
            "    pass_env: [AWS_*, KUBECONFIG]\n"
            "    env: {DB: '${secret.${var.X}/db}',\n"
            "          PW: 'x${secret.${var.X}/db.password}'}\n",
        ),
        "X=mavis/prod",
    )
    assert runbook.steps[1].fields.env == {"DB": "${secret.mavis/prod/db}", "PW": "x${secret.mavis/prod/db.password}"}
    assert runbook.steps[1].fields.pass_env == ["AWS_*", "KUBECONFIG"]
    deploy = next(step for step in load(EXAMPLE).steps if step.name == "deploy")
    assert deploy.fields.env == {"APP_DB_SECRET": "${secret.mavis/production/db}"}
    with pytest.raises(ConfigError, match=r"steps\[1\].pass_env\[0\]: 'AWS-\*' is not a valid environment variable"):
        load(write(tmp_path, BASE + "  - name: r\n    type: run\n    command: [x]\n    pass_env: [AWS-*]\n"))


def test_runtime_references_keep_their_type_alone_and_become_text_inside_a_string() -> None:
    outputs = {"restore": {"port": 5433, "host": "127.0.0.1"}}
    step = {
        "port": "${steps.restore.port}",
        "url": "http://${steps.restore.host}:${steps.restore.port}/",
        "id": "${run.id}",
        "kept": "${secret.a.b}",
    }
    resolved = resolve_runtime(step, outputs, {"id": "r1", "rehearsal": False})
    assert resolved == {"port": 5433, "url": "http://127.0.0.1:5433/", "id": "r1", "kept": "${secret.a.b}"}
    with pytest.raises(ConfigError, match="step 'restore' has no output 'user'"):
        resolve_runtime("${steps.restore.user}", outputs, {"id": "r1"})


def point(arn: str, resource: str, status: str, created: str) -> dict[str, str]:
    return {"recovery_point_arn": arn, "resource_id": resource, "status": status, "creation_date": created}


POINTS = [
    point("a", "db", "COMPLETED", "2026-11-24T07:00:00+00:00"),
    point("b", "db", "COMPLETED", "2026-11-24T19:00:00+00:00"),
    point("c", "db", "PARTIAL", "2026-11-25T07:00:00+00:00"),
    point("d", "other", "COMPLETED", "2026-11-25T07:00:00+00:00"),
]


@pytest.mark.parametrize(
    ("recovery_point", "at_or_before", "chosen"),
    [
        ("latest", None, "b"),  # c is not COMPLETED, d is another resource
        ("latest", "2026-11-24T18:59:59+00:00", "a"),
        ("latest", "2026-11-24T19:00:00Z", "b"),  # at or before: inclusive
        ("latest", "2026-11-24T06:00:00Z", None),
        ("a", None, "a"),
        ("c", None, None),  # an ARN that is not COMPLETED
        ("d", None, None),  # an ARN of another resource
    ],
)
def test_choice_of_the_recovery_point(recovery_point: str, at_or_before: str | None, chosen: str | None) -> None:
    step = select_step(resource="db", recovery_point=recovery_point, at_or_before=at_or_before)
    found = _choose(POINTS, step)
    assert (found["recovery_point_arn"] if found else None) == chosen


def test_choice_ranks_by_the_vaults_own_completion_date_never_a_claimed_creation_date() -> None:
    """A copy's creation_date is what the sending account claimed (2099, or just before an incident); the
    vault's own completion_date decides."""

    def completed(arn: str, created: str, done: str) -> dict[str, str]:
        return {**point(arn, "db", "COMPLETED", created), "completion_date": done}

    points = [
        completed("clean", "2026-11-24T07:00:00+00:00", "2026-11-24T07:05:00+00:00"),
        completed("forged", "2099-01-01T00:00:00+00:00", "2026-11-24T08:00:00+00:00"),
        completed("next", "2026-11-24T19:00:00+00:00", "2026-11-24T19:05:00+00:00"),
        completed("backdated", "2026-11-24T07:01:00+00:00", "2026-11-24T20:00:00+00:00"),
    ]
    latest = select_step(resource="db", recovery_point="latest", at_or_before=None)
    assert _choose(points, latest)["recovery_point_arn"] == "backdated"  # type: ignore[index]
    for incident, chosen in (("2026-11-24T07:30:00+00:00", "clean"), ("2026-11-24T19:30:00+00:00", "next")):
        at = select_step(resource="db", recovery_point="latest", at_or_before=incident)
        assert _choose(points, at)["recovery_point_arn"] == chosen  # type: ignore[index]


@pytest.mark.parametrize(
    ("recovery_point", "incident", "chosen"),
    [
        ("latest", "2026-11-24T19:00:00+00:00", "b"),  # at the incident: allowed (RPO 0)
        ("latest", "2026-11-24T18:59:59+00:00", "a"),  # b was taken after the incident
        ("latest", "2026-11-24T06:00:00+00:00", None),  # every point is later: refused, never a negative RPO
        ("b", "2026-11-24T18:59:59+00:00", None),  # an ARN taken after the incident too
    ],
)
def test_a_point_after_the_incident_is_never_chosen(recovery_point: str, incident: str, chosen: str | None) -> None:
    step = select_step(resource="db", recovery_point=recovery_point, at_or_before=None)
    found = _choose(POINTS, step, datetime.fromisoformat(incident))
    assert (found["recovery_point_arn"] if found else None) == chosen
