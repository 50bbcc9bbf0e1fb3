"""The cluster's settings as far as they can be checked without its driver: whether psycopg
is installed at all, and a connection string whose password libpq would misread.

Both are plain checks, so ``validate`` makes them on a host without the ``cluster`` extra,
and nothing under ``config/`` imports the cluster's code.
"""

from __future__ import annotations

import importlib.util
import re

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


_URI = re.compile(r"postgres(?:ql)?://(?P<userinfo>[^@]*:[^@]*(?:@[^@]*)*?)@[^@]*$", re.DOTALL)
_UNENCODED = "/@"


def password_problem(dsn: str) -> str | None:
    """Why ``dsn``'s password would be misread, or None. In a URI libpq ends the password
    at an unencoded ``/`` (and at the first of two ``@``), and reads the rest as a host, a
    port or a database name, which messages and ``cluster status`` then show. The message
    never holds the password, nor its length."""
    found = _URI.match(dsn.strip())
    if found is None:
        return None
    password = found["userinfo"].partition(":")[2]
    if not any(char in password for char in _UNENCODED):
        return None
    return (
        "the password in this postgresql:// connection string holds an unencoded / or @,"
        " which libpq would read as the start of a host or a database; percent-encode it"
        " (/ is %2F, @ is %40), or give the password as key=value: password=..."
    )
