"""The ``cronplus`` command, thin: parse arguments, wire objects, map errors to exit codes.
``main`` is the group (the console script's ``run``); ``context`` what the commands share;
``crontab`` holds validate, list and next; ``runs`` run-once, run and history; ``admin``
daemon, status, reload, db, cluster and service.

Imports: any part; nothing imports it but ``cronplus.__main__``.
"""
