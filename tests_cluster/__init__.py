"""The cluster fault suite: issue 21's scenarios on three real nodes (``make test-cluster``)."""
