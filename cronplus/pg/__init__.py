"""PostgreSQL for cluster mode: the only package that imports psycopg.

psycopg is the ``cluster`` extra (``pip install 'cronplus[cluster]'``), not a dependency of
every installation: ``driver_missing()`` lets ``validate`` say so before anything imports it.
"""

from __future__ import annotations

import importlib.util

EXTRA = "cronplus[cluster]"
"""What to install for cluster mode."""


def driver_missing() -> str | None:
    """Why cluster mode cannot run here (psycopg is not installed), or None."""
    if importlib.util.find_spec("psycopg") is not None:
        return None
    return (
        "cluster mode needs PostgreSQL's driver psycopg, which is not installed;"
        f" install the extra: pip install '{EXTRA}' (or pipx install '{EXTRA}')"
    )
