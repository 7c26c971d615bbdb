"""``dr run`` SIGKILLed while a hook runs: the hook's processes (its command and what the command started)
must not keep running while ``dr resume`` runs the same step again, and the resumed run completes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import yaml

from strongroom.services.dr.hookproc import alive, stop_previous
from tests.e2e.dr_world import latest_run
from tests.support.cli import Cli

HOOK = """\
#!/bin/sh
dir="$1"
attempt=$(( $(cat "$dir/attempts" 2>/dev/null || echo 0) + 1 ))
echo "$attempt" > "$dir/attempts"
if [ "$attempt" -eq 1 ]; then
  # A child that outlives its parent shell unless someone kills its process group: a heartbeat.
  ( while :; do date +%s%N > "$dir/heartbeat"; sleep 0.05; done ) &
  echo "$$ $!" > "$dir/first"
  echo "started"            # into the run's log: the fault point dr.hook:output:hook fires on it
  wait
fi
for pid in $(cat "$dir/first"); do
  if [ -e "/proc/$pid" ] && ! grep -q '^State:[[:space:]]*[ZX]' "/proc/$pid/status"; then
    echo "$pid" >> "$dir/alive-at-resume"
  fi
done
echo "resumed"
"""


def test_hook_of_a_killed_run_is_gone_before_resume_runs_it_again(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    work = tmp_path / "hook"
    work.mkdir()
    script = work / "hook.sh"
    script.write_text(HOOK)
    script.chmod(0o755)
    runbook = tmp_path / "runbook.yaml"
    steps = [{"name": "hook", "type": "run", "command": [str(script), str(work)], "timeout_seconds": 120}]
    runbook.write_text(yaml.safe_dump({"runbook": "hook-kill", "steps": steps}))

    killed = cli.run("dr", "run", str(runbook), ok=False, env={"STRONGROOM_FAULT_KILL_AT": "dr.hook:output:hook"})
    first = [int(pid) for pid in (work / "first").read_text().split()]
    try:
        assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr)
        run_id = latest_run(cli)
        resumed = cli.json("dr", "resume", run_id)
        assert resumed["state"] == "COMPLETED", resumed
        assert (work / "attempts").read_text().strip() == "2"
        # The resumed attempt saw none of the first attempt's processes alive when it started.
        assert not (work / "alive-at-resume").exists(), (work / "alive-at-resume").read_text()
        assert [pid for pid in first if alive(pid)] == []
        hook = next(s for s in resumed["steps"] if s["name"] == "hook")
        assert hook["attempts"] == 2
        assert any("killed what the previous attempt of hook left running" in c for c in hook["changes"]), hook
    finally:
        for pid in first:  # never leave a heartbeat behind, whatever failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_hook_runs_in_its_own_session(tmp_path: Path) -> None:
    """Ctrl-C at the terminal reaches dr run, which then ends the hook's group itself (not half of it)."""
    cli = Cli(tmp_path / "home")
    cli.run("init")
    out = tmp_path / "ids"
    command = f"ps -o sid= -o pgid= -p $$ > {out}; echo $$ >> {out}"
    runbook = tmp_path / "runbook.yaml"
    runbook.write_text(
        yaml.safe_dump({"runbook": "ids", "steps": [{"name": "ids", "type": "run", "command": command}]})
    )
    cli.run("dr", "run", str(runbook))
    sid, pgid, pid = out.read_text().split()
    assert sid == pgid == pid


def test_a_recycled_process_group_id_is_never_signalled() -> None:
    """The saved group id may belong to someone else's processes by the time of the resume: without this
    run's STRONGROOM_DR_RUN_ID they are left alone; with it they are killed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    other = subprocess.Popen(["sleep", "600"], start_new_session=True, env=env)
    ours = subprocess.Popen(["sleep", "600"], start_new_session=True, env={**env, "STRONGROOM_DR_RUN_ID": "run-1"})
    try:
        assert stop_previous(other.pid, "run-1") is False
        assert other.poll() is None and alive(other.pid)
        assert stop_previous(ours.pid, "run-2") is False  # another run's hook is not ours either
        assert stop_previous(ours.pid, "run-1") is True
        assert ours.wait() == -signal.SIGKILL
    finally:
        for proc in (other, ours):
            if proc.poll() is None:
                proc.kill()
            proc.wait()
