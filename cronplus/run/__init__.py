"""Starting one attempt of a job: the only part that starts processes (``runner``; the
exec wrapper ``limit_exec`` becomes the job). ``command`` builds what runs and its
environment, ``exits`` says how it ended, ``capture`` keeps the ends of its output,
``parking`` holds pipe ends out of the descriptor table during a burst, ``limits`` sets
rlimits and scopes, ``secrets`` reads env secrets and masks them in output.

Imports: ``core`` and ``host``; never the engine, the daemon or the config reader.
"""
