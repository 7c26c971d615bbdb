#!/usr/bin/env python3
"""CLI start-up: wall and CPU time of short ``strongroom`` commands, median of N runs.

Every ``strongroom`` call pays Python's start-up and the imports of the command it runs. That is
what ``archive_command = 'strongroom wal push %p'`` pays once per WAL segment, and what the e2e
suite pays per CLI call. This measures it for a few commands, each run ``--runs`` times as a fresh
process (the page cache is warm after the first run; the first run is discarded), and prints a
Markdown table of medians:

- ``--version`` and ``--help``: no account, no command group loaded (the floor of the CLI);
- ``schedule next 'rate(1 hour)'``: one light command group, no account;
- ``jobs list --json`` and ``recovery-points list --json``: an account opened (catalog, and the
  key file unlocked where the command needs it) in a home made by ``strongroom init``.

CPU is user + system time of the child from ``os.wait4``. ``--importtime CMD...`` instead runs one
command under ``python -X importtime`` and prints the slowest imports (cumulative), to see where
start-up goes.

    .venv/bin/python bench/cli_startup.py --runs 15
    .venv/bin/python bench/cli_startup.py --importtime jobs list --json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "strongroom-bench-passphrase"

COMMANDS: list[tuple[str, list[str], bool]] = [  # label, argv, needs an account
    ("--version", ["--version"], False),
    ("--help", ["--help"], False),
    ("schedule next", ["schedule", "next", "rate(1 hour)"], False),
    ("jobs list", ["jobs", "list", "--json"], True),
    ("recovery-points list", ["recovery-points", "list", "--json"], True),
]


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    return {**env, "STRONGROOM_HOME": str(home), "STRONGROOM_PASSPHRASE": PASSPHRASE, "COLUMNS": "200"}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system) and exit code of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.stderr is not None:
        proc.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime, proc.returncode


def measure(strongroom: str, runs: int, home: Path) -> list[dict[str, object]]:
    env = environment(home)
    rows = []
    for label, args, _ in COMMANDS:
        samples = [timed([strongroom, *args], env) for _ in range(runs + 1)][1:]  # first run warms the cache
        codes = sorted({code for _, _, code in samples})
        rows.append(
            {
                "command": f"strongroom {label}",
                "wall": statistics.median(w for w, _, _ in samples),
                "cpu": statistics.median(c for _, c, _ in samples),
                "wall_min": min(w for w, _, _ in samples),
                "exit": ",".join(map(str, codes)),
            }
        )
    return rows


def importtime(strongroom: str, args: list[str], home: Path, top: int) -> None:
    python = Path(strongroom).resolve().parent / "python"
    argv = [str(python), "-X", "importtime", "-m", "strongroom.cli.main", *args]
    proc = subprocess.run(argv, env=environment(home), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own_us, cumulative_us, name = line.removeprefix("import time:").split("|", 2)
        rows.append((int(cumulative_us), int(own_us), name.rstrip()))
    total = sum(self_us for _, self_us, _ in rows)
    print(f"imports: {len(rows)} modules, {total / 1e6:.3f} s in total (self times)")
    print(f"{'cumulative':>11} {'self':>9}  module")
    for cumulative, own, name in sorted(rows, reverse=True)[:top]:
        print(f"{cumulative / 1e6:10.3f}s {own / 1e6:8.3f}s  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="Runs per command (medians). Default 10.")
    parser.add_argument(
        "--strongroom", default=str(REPO / ".venv" / "bin" / "strongroom"), help="The strongroom executable."
    )
    parser.add_argument(
        "--importtime", nargs=argparse.REMAINDER, metavar="ARGS", help="Show the imports of one command."
    )
    parser.add_argument("--top", type=int, default=25, help="Modules shown by --importtime. Default 25.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="strongroom-startup-") as scratch:
        home = Path(scratch) / "home"
        init = subprocess.run(
            [args.strongroom, "init", "--json"], env=environment(home), capture_output=True, text=True
        )
        if init.returncode != 0:
            print(f"strongroom init failed: {init.stderr.strip()}", file=sys.stderr)
            return 1
        if args.importtime is not None:
            importtime(args.strongroom, args.importtime or ["--version"], home, args.top)
            return 0
        rows = measure(args.strongroom, args.runs, home)
    print(f"{args.runs} runs each, medians (first run discarded); {os.cpu_count()} CPUs; {sys.version.split()[0]}\n")
    print("| command | wall | CPU | wall (min) | exit |")
    print("|---|---|---|---|---|")
    for row in rows:
        times = f"{row['wall']:.3f} s | {row['cpu']:.3f} s | {row['wall_min']:.3f} s"
        print(f"| `{row['command']}` | {times} | {row['exit']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
