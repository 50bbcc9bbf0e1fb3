"""What cronplus remembers between runs: the ``Store`` protocol and what every store shares
(``store``), the SQLite store (``sqlite``: one WAL file, its schema and locks), and the
state folder and its files (``files``). ``cluster.pg.store`` is the other ``Store``; both
pass the same contract tests (tests/test_state.py).

Imports: ``core`` and ``host``.
"""
