"""The crontab file: YAML text with places in, a valid ``Crontab`` out, or every problem at
once with its file:line:col. ``loader`` is the entry (``load``, ``loads``; ``python -m
cronplus.config.loader --write-schema``); ``yamlsource`` reads YAML keeping places;
``models``, ``fields`` and ``errors`` hold the file's pydantic models, each field's check
and the wording; ``alerting`` checks the alert, ping and metrics keys; ``dsn`` the cluster
settings that need no driver. The JSON Schema ships here as ``cronplus.schema.json``.

Imports: ``core``, ``host`` and ``run`` (to check limits, users and secrets as they will
be used).
"""
