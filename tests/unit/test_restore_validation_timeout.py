"""A restore test's validation that runs past its window is TIMED_OUT, and what it started is stopped.

The window is at least an hour in a plan, so these call the validation with a deadline a moment away: a
command hook that never ends, a URL that never answers, a window already spent. The verdict's wording is
asserted, not the time it took.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from strongroom.config.restore_testing import HookValidation, ValidationConfig
from strongroom.services.restore_testing_records import ValidationStatus
from strongroom.services.restore_testing_validation import CheckResult, Restored, overall, validate
from tests.support.locks import wait_until


def _restored(tmp_path: Path) -> Restored:
    return Restored("job-1", "weekly", "files", "directory", "arn:rp", {"target": str(tmp_path / "t")}, {})


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_command_hook_that_never_ends_is_timed_out_and_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "hook.pid"
    hook = HookValidation(command=["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 3600'])
    [result] = validate(_restored(tmp_path), ValidationConfig(row_counts=False, hook=hook), time.monotonic() + 1)
    assert result.status == ValidationStatus.TIMED_OUT, result
    assert "ran past the validation window" in result.message
    wait_until(lambda: _gone(int(pid_file.read_text())), "the hook's process was killed")


def test_a_validation_url_that_never_answers_is_timed_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        hook = HookValidation(url=f"http://127.0.0.1:{port}/validate")
        [result] = validate(_restored(tmp_path), ValidationConfig(row_counts=False, hook=hook), time.monotonic() + 1)
    assert result.status == ValidationStatus.TIMED_OUT, result
    assert "did not answer within the window" in result.message


def test_a_spent_window_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hook = HookValidation(command=["touch", str(marker)])
    [result] = validate(_restored(tmp_path), ValidationConfig(row_counts=False, hook=hook), time.monotonic() - 1)
    assert result.status == ValidationStatus.TIMED_OUT, result
    assert not marker.exists()


def test_timed_out_outranks_failed_and_names_its_check() -> None:
    status, message = overall(
        [
            CheckResult("sql", ValidationStatus.FAILED, "1 query did not match"),
            CheckResult("hook", ValidationStatus.TIMED_OUT, "check.sh ran past the validation window"),
            CheckResult("row_counts", ValidationStatus.SUCCESSFUL, "12 tables"),
        ]
    )
    assert status == ValidationStatus.TIMED_OUT
    assert message == "hook: check.sh ran past the validation window"
