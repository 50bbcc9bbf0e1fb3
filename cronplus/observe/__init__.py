"""What cronplus shows the outside: the event log on stderr (``logs``; ``journal`` under
systemd), alert decisions and dead-man timers (``alerts``), their delivery (``notifiers``,
over ``webclient``), healthchecks pings (``pings``), Prometheus metrics and ``/healthz``
(``metrics``, the only importer of prometheus_client, served by ``httplistener``), and the
control socket of ``status`` and ``run --via-daemon`` (``control``). The daemon wires them
to the engine (``daemon.observatory``).

Imports: ``core``, ``clock``, ``host`` and ``run``; never the engine.
"""
