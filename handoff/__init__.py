"""The bridge between the two paths: Temporal messages of a call, the outbox and its relay."""
