"""Targets: what a job sends instead of starting a process (docs/targets.md).

``dispatch.py`` turns an attempt into a ``RunningTarget`` the engine drives as it drives a
process; ``call.py`` holds what a sender gets and gives. ``httpcall.py``, ``celerytask.py``,
``rqjob.py`` and ``amqppublish.py`` each send one kind, and each imports its client library
(an extra) alone.
"""
