"""``python -m strongroom``: the command line, as the ``strongroom`` script runs it."""

from strongroom.cli.main import run

run()
