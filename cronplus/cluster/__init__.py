"""Several hosts on one crontab through PostgreSQL, each slot run once: the pure decisions
(``decisions``: claim order and delays, lease timing, the definitions hash), the node that
claims slots for the engine, heartbeats and takes over (``node``), its standing by clock
and definitions (``standing``), the ``Store`` its engine writes to (``nodestore``), and
``pg``, the only package that imports psycopg.

Imports: everything below the daemon: ``engine``, ``observe``, ``state``, ``config``,
``core``, ``clock``.
"""
