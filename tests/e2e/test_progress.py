"""On a terminal, long work shows a progress bar with bytes, rate and ETA; piped output stays clean."""

from __future__ import annotations

import os
import pty
import random
import subprocess
from pathlib import Path

from tests.support.cli import Cli


def run_on_terminal(cli: Cli, *args: str) -> tuple[int, str]:
    controller, terminal = pty.openpty()
    env = {**cli.env, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen(cli.command(*args), stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    output = bytearray()
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:
            break
        if not data:
            break
        output += data
    os.close(controller)
    return process.wait(), output.decode(errors="replace")


def test_backup_on_a_terminal_shows_bytes_rate_and_eta(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "home")
    cli.run("init")
    tree = tmp_path / "tree"
    tree.mkdir()
    rng = random.Random(1)
    for n in range(30):
        (tree / f"f{n}").write_bytes(rng.randbytes(2_000_000))
    cli.run("resources", "add", "files", "--type", "directory", "--path", str(tree))
    code, screen = run_on_terminal(cli, "backup", "start", "--resource", "files", "--wait")
    assert code == 0, screen
    assert "Backing up" in screen
    assert "MB" in screen and "/s" in screen  # bytes done and transfer rate columns
    piped = cli.run("backup", "start", "--resource", "files", "--wait")
    assert "Backing up" not in piped.stdout + piped.stderr
    code, screen = run_on_terminal(cli, "backup", "start", "--resource", "files", "--wait")
    assert code == 0, screen
    assert "0:00:0" in screen  # an ETA, estimated from the previous backup's size
