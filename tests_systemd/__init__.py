"""The systemd suite: the shipped units under a real systemd 252 (``make test-systemd``)."""
