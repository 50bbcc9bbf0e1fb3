"""``cronplus daemon``: ``start`` opens the state and runs the loop (``clusterd`` starts a
cluster node instead); ``loop`` is the scheduler loop, signals and reload; ``observatory``
wires alerts, pings, metrics and the control socket to the engine; ``watch`` notices
crontab changes; ``sdnotify`` talks to systemd; ``forkload`` makes the first load in a
child; ``service`` renders the systemd units and the launchd agent
(``service_templates/``).

Imports: every part but ``cli``.
"""
