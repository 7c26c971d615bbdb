"""How ``backup start``, ``restore start`` and ``copy start`` run their job and show its outcome.

Without ``--wait`` the job goes to a detached worker (services/job_runner.py) and the command reports it
started; with ``--wait`` it runs here behind a progress bar and the command reports how it ended.
"""

from __future__ import annotations

from strongroom.cli import output
from strongroom.model import Job, JobType
from strongroom.services.account import Account
from strongroom.services.job_runner import execute_job, expected_bytes, spawn_job
from strongroom.services.joblock import JobLock
from strongroom.services.jobs import get_job


def run_or_spawn(account: Account, job: Job, lock: JobLock, wait: bool, json_output: bool, verb: str) -> Job:
    """Run a CREATED job (its lock handed over): in a detached process, or here when ``wait``; the job after."""
    if not wait:
        spawn_job(account, job, lock)
        return get_job(account, job.id)
    with output.progress_bar(verb, expected_bytes(account, job), enabled=not json_output) as progress:
        return execute_job(account, job, lock, progress)


def report(job: Job, json_output: bool) -> None:
    data = job.as_dict()
    if json_output:
        output.emit_json(data)
        return
    if job.job_type == JobType.BACKUP:
        if job.state.finished:
            result = job.result
            output.console.print(
                f"Backup job {job.id} {job.state.value}: {output.human_bytes(result.get('source_bytes'))} read, "
                f"{output.human_bytes(result.get('new_bytes'))} added to the vault"
            )
            output.console.print(f"Recovery point: {job.recovery_point_arn}")
        else:
            output.console.print(f"Backup job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")
    elif job.job_type == JobType.COPY:
        _report_copy(job)
    elif job.state.finished:
        output.console.print(f"Restore job {job.id} {job.state.value}: restored to {job.result.get('target')}")
        for entry in job.result.get("disabled_on_restore") or []:
            output.console.print(f"  disabled on restore: {entry}", markup=False)
        for note in job.result.get("notes") or []:
            output.console.print(f"  note: {note}", markup=False)
        if job.result.get("setid_bits_dropped"):
            output.console.print(
                f"{job.result['setid_bits_dropped']} files lost set-user-ID/set-group-ID bits "
                "(the recovery point is a copy); pass --preserve-special to keep them"
            )
    else:
        output.console.print(f"Restore job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")


def _report_copy(job: Job) -> None:
    if not job.state.finished:
        output.console.print(f"Copy job {job.id} started; follow it with 'strongroom jobs describe {job.id}'")
        return
    result = job.result
    output.console.print(
        f"Copy job {job.id} {job.state.value}: {output.human_bytes(result.get('bytes_transferred'))} copied, "
        f"{output.human_bytes(result.get('bytes_on_wire'))} on the wire"
    )
    output.console.print(f"Copy: {result.get('destination_recovery_point_arn')}")
