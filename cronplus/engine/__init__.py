"""The engine: ``tick(now)``: plan -> run -> record, the same for the daemon, ``run-once``
and ``run``. ``engine`` owns the runs in flight (``slotrun``), retries and overlap;
``timetable`` keeps every job's next slot on one heap; ``admission`` is the
``max_concurrent`` queue and the slot gate; ``inflight`` notes attempts in the store;
``runlog`` records skipped, missed and failed slots; ``events`` is what observers hear.

Imports: ``core``, ``clock``, ``run``, ``state`` and ``observe`` (the event log).
"""
