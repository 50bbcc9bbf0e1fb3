"""``python -m cronplus``: the same as the ``cronplus`` command."""

from cronplus.cli.main import run

run()
