"""What cronplus knows of the host it runs on: its users and groups (``accounts``), its
control groups (``cgroups``), and which files root may trust (``permissions``: every read
is checked on the very descriptor it reads).

Imports: ``core``.
"""
