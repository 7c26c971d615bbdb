"""Running one measured command: wall time, peak memory of its process tree, exit status.

Wall time is ``time.perf_counter()`` around the subprocess. Peak memory is sampled from /proc
(no psutil): every ``interval`` seconds we find every descendant of the started process and sum
their resident set sizes; the peak of that sum is ``peak_rss_tree``, the largest single process
seen is ``peak_rss_max_proc``. PostgreSQL server processes a command starts (``pg_ctl start``
during a cluster restore) are left out: their shared buffers are not the tool's memory. Sampling
can miss a spike shorter than the interval.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


class CommandFailed(RuntimeError):
    def __init__(self, result: RunResult) -> None:
        self.result = result
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-12:]
        super().__init__(f"command failed (exit {result.returncode}): {result.command}\n" + "\n".join(tail))


@dataclass
class RunResult:
    command: str
    returncode: int
    seconds: float
    peak_rss_tree: int = 0
    peak_rss_max_proc: int = 0
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Server processes started by a measured command (pg_ctl start inside a restore) are not the
# command's own memory: their subtrees are left out of the sum.
EXCLUDED_COMMANDS = {b"postgres", b"postmaster"}


def _ppid_map() -> dict[int, tuple[int, bytes]]:
    parents: dict[int, tuple[int, bytes]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." — comm may contain spaces and parentheses.
        comm = data[data.find(b"(") + 1 : data.rfind(b")")]
        rest = data[data.rfind(b")") + 2 :].split()
        if len(rest) > 1:
            parents[int(name)] = (int(rest[1]), comm)
    return parents


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_pids(root: int, exclude: set[bytes] | frozenset[bytes] = frozenset()) -> list[int]:
    """``root`` and its descendants, leaving out the subtrees of processes named in ``exclude``."""
    parents = _ppid_map()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _comm) in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid != root and parents.get(pid, (0, b""))[1] in exclude:
            continue
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


class _Sampler(threading.Thread):
    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_tree = 0
        self.peak_proc = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        sizes = [_rss(pid) for pid in tree_pids(self.root, EXCLUDED_COMMANDS)]
        self.peak_tree = max(self.peak_tree, sum(sizes))
        self.peak_proc = max(self.peak_proc, max(sizes, default=0))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run(
    command: list[str] | str,
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    stdout: Any = subprocess.PIPE,
    input_text: str | None = None,
    check: bool = True,
    interval: float = 0.05,
    log: Any = None,
    timeout: float | None = None,
) -> RunResult:
    """Run ``command`` (a list, or a string for ``bash -c`` with pipefail), measuring it."""
    if isinstance(command, str):
        argv = ["bash", "-c", "set -euo pipefail; " + command]
        shown = command
    else:
        argv = [str(a) for a in command]
        shown = shlex.join(argv)
    if log:
        log(f"$ {shown}")
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=full_env,
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        text=True,
    )
    sampler = _Sampler(proc.pid, interval)
    sampler.start()
    try:
        out, err = proc.communicate(input_text, timeout=timeout)
    except BaseException:
        _kill_tree(proc)
        sampler.stop()
        raise
    seconds = time.perf_counter() - started
    sampler.stop()
    result = RunResult(
        shown,
        proc.returncode,
        seconds,
        sampler.peak_tree,
        sampler.peak_proc,
        out if isinstance(out, str) else "",
        err or "",
    )
    if check and not result.ok:
        raise CommandFailed(result)
    return result


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in reversed(tree_pids(proc.pid, EXCLUDED_COMMANDS)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dir_bytes(path: str | Path) -> dict[str, int]:
    """Size of a directory tree: ``disk`` (allocated blocks) and ``apparent`` (file lengths)."""
    disk = apparent = files = 0
    path = Path(path)
    if not path.exists():
        return {"disk": 0, "apparent": 0, "files": 0}
    if path.is_file():
        st = path.stat()
        return {"disk": st.st_blocks * 512, "apparent": st.st_size, "files": 1}
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            disk += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return {"disk": disk, "apparent": apparent, "files": files}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}
