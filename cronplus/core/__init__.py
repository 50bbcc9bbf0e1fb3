"""The pure core: the domain model, cron expressions and their English, schedules with the
DST rules, and the scheduling decisions (plan). Time is an argument; nothing here reads the
clock, sleeps, starts a process or touches a file.

Modules: ``model`` (jobs, settings, slots, results, errors), ``cronexpr`` (the grammar, in
naive wall time; only ``schedule`` imports it), ``words`` (the English), ``schedule``
(expression + zone -> instants), ``plan`` (what is due, missed, retried, and when to wake),
``collector`` (when CPython's garbage collector may run).

Imports: nothing of cronplus outside ``core``.
"""
