"""TCP ports for the servers the suite starts on a port it chooses (PostgreSQL clusters, webhook receivers,
the sample app), unique across pytest-xdist workers and concurrent test runs on the machine.

``strongroom serve`` needs none of this: it binds port 0 and says which port it got (tests/support/accounts.py).
A cluster cannot, so a port is picked here and bound by the server a moment later. Asking the kernel for a
free port (bind to 0, close, hand it out) races: another worker, or any client's outgoing connection, can
take it in between. Here a port is:

- below the kernel's ephemeral range, which ``bind(0)`` and outgoing connections draw from, so neither a
  ``serve --port 0`` nor a client connection can take it;
- reserved by an exclusive ``flock`` on ``<tmp>/strongroom-test-ports/<port>``, held until this process
  ends, so no other worker or test run that uses this module hands it out again (a lock dies with its
  holder: a killed run leaves nothing to clean up);
- checked free by binding it, for the processes outside this scheme.

Each process starts its search at a random point of the range, so concurrent runs rarely probe the same
ports. A port is never handed out twice by one process, even after its server stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import tempfile
from pathlib import Path

from strongroom.adapters.postgres.tools import port_is_free

LOWEST = 10000  # well above the well-known and registered-by-habit ports tests might meet
LOCK_DIR = Path(tempfile.gettempdir()) / "strongroom-test-ports"

_held: dict[int, int] = {}  # port -> fd of its lock, open for the life of this process
_cursor: list[int] = []


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and no other user of this module will hand out."""
    low, high = _range()
    if not _cursor:
        _cursor.append(random.randrange(low, high))
    for _ in range(high - low):
        port = _cursor[0]
        _cursor[0] = port + 1 if port + 1 < high else low
        # A port someone outside this scheme listens on stays reserved, so it is not tried again.
        if port not in _held and _reserve(port) and port_is_free(port):
            return port
    raise RuntimeError(f"no free TCP port left in {low}-{high - 1} for the tests")


def _range() -> tuple[int, int]:
    """``[LOWEST, start of the ephemeral range)``."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    return LOWEST, max(ephemeral_low, LOWEST + 1000)


def _reserve(port: int) -> bool:
    if not LOCK_DIR.is_dir():
        LOCK_DIR.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # made by another user a moment ago
            LOCK_DIR.chmod(0o1777)  # shared by every user's test runs, like /tmp
    try:
        fd = os.open(LOCK_DIR / str(port), os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held[port] = fd
    return True
